"""Hinge GAN losses on a discriminator's patch logits (as in VQGAN / latent diffusion)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from threestudio.utils.typing import Float, Optional, Tensor


def generator_loss(
    discriminator: nn.Module,
    inputs: Float[Tensor, "B C H W"],
    reconstructions: Float[Tensor, "B C H W"],
    cond: Optional[Tensor] = None,
) -> Float[Tensor, ""]:
    """``-mean(D(fake))``: the generator raises the discriminator's score of its images.
    ``inputs`` (the real images) are not used; ``cond`` is concatenated on channels."""
    fake = reconstructions.contiguous()
    if cond is not None:
        fake = torch.cat((fake, cond), dim=1)
    return -torch.mean(discriminator(fake))


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Float[Tensor, ""]:
    """``(mean(relu(1 - real)) + mean(relu(1 + fake))) / 2``: zero once real logits are >= 1 and
    fake ones <= -1."""
    loss_real = torch.mean(F.relu(1.0 - logits_real))
    loss_fake = torch.mean(F.relu(1.0 + logits_fake))
    return 0.5 * (loss_real + loss_fake)


def discriminator_loss(
    discriminator: nn.Module,
    inputs: Float[Tensor, "B C H W"],
    reconstructions: Float[Tensor, "B C H W"],
    cond: Optional[Tensor] = None,
) -> Float[Tensor, ""]:
    """The hinge loss of real ``inputs`` against fake ``reconstructions``; neither carries a
    gradient back to what made it (only the discriminator learns from this loss)."""
    real = inputs.contiguous().detach()
    fake = reconstructions.contiguous().detach()
    if cond is not None:
        real, fake = torch.cat((real, cond), dim=1), torch.cat((fake, cond), dim=1)
    return hinge_d_loss(discriminator(real), discriminator(fake))
