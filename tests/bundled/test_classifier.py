"""The bundled shape-and-colour classifier (load/tiny-shapes/classifier) is accurate on renders
it never saw."""

import os

from threestudio.bundled.classifier import ShapeColorClassifier, classifier_accuracy
from threestudio.bundled.shapes import render_shape_dataset
from threestudio.bundled.tiny_model import BUNDLED_MODEL_PATH

# bar set from measurement (see load/tiny-shapes/README.md and benchmarks/RESULTS.md)
CLASSIFIER_BAR = 0.95  # shape and colour both right on fresh renders


def test_classifier_is_accurate_on_fresh_renders():
    classifier = ShapeColorClassifier.load(os.path.join(BUNDLED_MODEL_PATH, "classifier"))
    data = render_shape_dataset(8, 32, 32, seed=4242, batch_size=8, progress=False)
    metrics = classifier_accuracy(classifier, data)
    print(f"classifier on fresh renders: {metrics}")
    assert metrics["accuracy"] >= CLASSIFIER_BAR
