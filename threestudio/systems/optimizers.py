"""Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm"), written for this project.

Update per parameter with gradient g_k, previous gradient g_{k-1}:
    m = (1-b1) m + b1 g
    v = (1-b2) v + b2 (g - g_prev)
    n = (1-b3) n + b3 (g + (1-b2)(g - g_prev))^2
    p = (p - lr * (m/bc1 + (1-b2) v/bc2) / (sqrt(n/bc3) + eps)) / (1 + lr * wd)
Betas follow the paper's convention (b close to 0.02/0.08/0.01), given here as the complementary
(0.98, 0.92, 0.99) like most implementations.
"""

import torch
from torch.optim import Optimizer


class Adan(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float = 0.0,
        no_prox: bool = False,
        foreach: bool = True,  # accepted for config compatibility
    ):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid betas: {betas}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox)
        self.max_grad_norm = max_grad_norm
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        clip_coef = 1.0
        if self.max_grad_norm > 0:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                total = torch.norm(torch.stack([torch.norm(gr) for gr in grads]))
                clip_coef = min(1.0, self.max_grad_norm / (float(total) + 1e-6))

        for group in self.param_groups:
            beta1, beta2, beta3 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad * clip_coef
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_diff"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["pre_grad"] = grad.clone()
                state["step"] += 1
                k = state["step"]
                bc1 = 1.0 - beta1**k
                bc2 = 1.0 - beta2**k
                bc3 = 1.0 - beta3**k

                diff = grad - state["pre_grad"]
                m, v, n = state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).add_(diff, alpha=1 - beta2)
                update = grad + beta2 * diff
                n.mul_(beta3).addcmul_(update, update, value=1 - beta3)

                denom = (n / bc3).sqrt_().add_(eps)
                step = (m / bc1 + beta2 * v / bc2) / denom
                if group["no_prox"]:
                    p.mul_(1 - lr * wd)
                    p.add_(step, alpha=-lr)
                else:
                    p.add_(step, alpha=-lr)
                    p.div_(1 + lr * wd)
                state["pre_grad"] = grad.clone()
        return loss
