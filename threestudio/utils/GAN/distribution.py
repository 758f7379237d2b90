"""A diagonal Gaussian over a latent image, parameterised by stacked mean and log-variance."""

import torch

from threestudio.utils.typing import Float, Tensor


class DiagonalGaussianDistribution:
    """``parameters`` is ``[B, 2C, H, W]``: the first ``C`` channels are the mean, the last ``C``
    the log-variance (clamped to ``[-30, 20]``). ``deterministic``: zero variance."""

    def __init__(self, parameters: Float[Tensor, "B C2 H W"], deterministic: bool = False):
        if parameters.shape[1] % 2 != 0:
            raise ValueError(
                f"DiagonalGaussianDistribution needs an even channel count, got {parameters.shape[1]}"
            )
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        if deterministic:
            self.logvar = torch.zeros_like(self.mean)
        self.std = torch.exp(0.5 * self.logvar) * (0.0 if deterministic else 1.0)
        self.var = self.std**2

    def sample(self) -> Float[Tensor, "B C H W"]:
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> Float[Tensor, "B C H W"]:
        return self.mean

    def kl(self) -> Float[Tensor, "B"]:
        """KL divergence to the standard normal, summed over channels and pixels."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        return 0.5 * torch.sum(self.mean**2 + self.var - 1.0 - self.logvar, dim=[1, 2, 3])
