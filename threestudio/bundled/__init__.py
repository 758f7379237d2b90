"""The bundled toy world: five shapes in six colours (``shapes``), the tiny text-to-image model
trained on their renders (``tiny_model``, shipped as ``load/tiny-shapes``), the classifier that
names shape and colour (``classifier``) and the R-precision evaluation of text-to-3D trials
(``evaluation``, also ``python -m threestudio.bundled.evaluation TRIAL...``).

It sits above the rest of the package: it renders with the registered material and rasteriser and
speaks the prompt processor's view words, and no other part of the package imports it.
"""
