"""The 2D networks and losses of Control4D's GAN renderer (``gan-volume-renderer``), at the
established import paths ``threestudio.utils.GAN.<module>``:

- ``distribution``: ``DiagonalGaussianDistribution``, a per-pixel Gaussian latent (mean, log-variance);
- ``vae``: ``Encoder`` (an image to such a latent, 4x smaller) and ``Decoder`` (the generator: a
  low-resolution RGB + latent map to a 4x larger image, modulated by a global style code);
- ``mobilenet``: ``MobileNetV3`` (small), the global encoder giving that style code;
- ``discriminator``: ``NLayerDiscriminator`` (a PatchGAN) and its ``weights_init``;
- ``loss``: the hinge GAN losses ``generator_loss`` / ``discriminator_loss``.

All are trained from scratch with the scene; nothing here loads weights."""
