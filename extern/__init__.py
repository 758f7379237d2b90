"""Model code of third-party methods, ported to diffusers-style components."""
