"""The optimizer of DreamerV3: adaptive gradient clipping → RMS scaling → momentum (LaProp), with warmup.

    optimizer = make_optimizer(config.agent.opt)
    optimizer.apply(grads, model.trainable_variables)

Per tensor, with gradient g, parameter θ and step t (counting from 1):

    g ← g / max(1, ‖g‖ / (agc · max(pmin, ‖θ‖)))          adaptive gradient clipping
    ν ← β2 ν + (1 − β2) g²;    u = g / (sqrt(ν / (1 − β2^t)) + ε)   RMS scaling (LaProp)
    μ ← β1 μ + (1 − β1) u;     θ ← θ − lr_t · μ / (1 − β1^t)         momentum
    lr_t = lr · min(1, (t − 1) / warmup) · m                      m: the tensor's lr multiplier (1 by default)

``optimizer: adam`` keeps the clipping but swaps the order of momentum and
scaling (Adam: the first moment of g divided by the root of the second), for
the paper's ablation.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("dreamer_tf")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear ramp from 0 to ``lr`` over ``warmup`` updates, then constant."""

    def __init__(self, lr: float, warmup: int) -> None:
        self.lr, self.warmup = lr, warmup

    def __call__(self, step):
        if not self.warmup:
            return ops.convert_to_tensor(self.lr, "float32")
        frac = ops.minimum(1.0, ops.cast(step, "float32") / float(self.warmup))
        return self.lr * frac

    def get_config(self) -> dict:
        return {"lr": self.lr, "warmup": self.warmup}


class LaProp(keras.optimizers.Optimizer):
    def __init__(
        self,
        learning_rate: float = 4e-5,
        agc: float = 0.3,
        pmin: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-20,
        warmup: int = 1000,
        order: str = "laprop",
        multipliers: list[tuple[keras.Variable, float]] | None = None,
        name: str = "laprop",
        **kwargs,
    ) -> None:
        super().__init__(learning_rate=Warmup(learning_rate, warmup), name=name, **kwargs)
        if order not in ("laprop", "adam"):
            raise ValueError(f"Unknown optimizer '{order}'; valid: laprop, adam.")
        self.agc, self.pmin = agc, pmin
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.order = order
        # (variable, learning-rate multiplier) pairs, matched by identity: Keras paths such as
        # ``linear/kernel`` repeat across layers, so a path would also catch other layers' weights.
        self.multipliers = {id(var): float(mult) for var, mult in multipliers or ()}

    def build(self, var_list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._mu = [self.add_variable_from_reference(v, "momentum") for v in var_list]
        self._nu = [self.add_variable_from_reference(v, "velocity") for v in var_list]
        self._mult = [self.multipliers.get(id(v), 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate) -> None:
        index = self._get_variable_index(variable)
        mu, nu = self._mu[index], self._nu[index]
        grad = ops.cast(gradient, variable.dtype)
        lr = ops.cast(learning_rate, variable.dtype) * self._mult[index]
        if self.agc:
            gnorm = ops.sqrt(ops.sum(ops.square(grad)))
            pnorm = ops.sqrt(ops.sum(ops.square(variable)))
            upper = self.agc * ops.maximum(self.pmin, pnorm)
            grad = grad / ops.maximum(1.0, gnorm / upper)
        step = ops.cast(self.iterations + 1, variable.dtype)
        corr1 = 1.0 - ops.power(self.beta1, step)
        corr2 = 1.0 - ops.power(self.beta2, step)
        self.assign(nu, self.beta2 * nu + (1.0 - self.beta2) * ops.square(grad))
        if self.order == "laprop":
            scaled = grad / (ops.sqrt(nu / corr2) + self.epsilon)
            self.assign(mu, self.beta1 * mu + (1.0 - self.beta1) * scaled)
            update = mu / corr1
        else:
            self.assign(mu, self.beta1 * mu + (1.0 - self.beta1) * grad)
            update = (mu / corr1) / (ops.sqrt(nu / corr2) + self.epsilon)
        self.assign_sub(variable, lr * update)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            agc=self.agc,
            pmin=self.pmin,
            beta1=self.beta1,
            beta2=self.beta2,
            epsilon=self.epsilon,
            order=self.order,
        )
        return config


def make_optimizer(
    opt, loss_scale: bool = False, multipliers: list[tuple[keras.Variable, float]] | None = None
) -> keras.optimizers.Optimizer:
    """Build the optimizer from ``config.agent.opt``; float16 wraps it in dynamic loss scaling.

    ``multipliers``: (variable, learning-rate multiplier) pairs (the actor's ``opt.actor``).
    """
    optimizer = LaProp(
        learning_rate=opt.lr,
        agc=opt.agc,
        pmin=opt.pmin,
        beta1=opt.beta1,
        beta2=opt.beta2,
        epsilon=opt.eps,
        warmup=opt.warmup,
        order=opt.optimizer,
        multipliers=multipliers,
    )
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, dynamic_growth_steps=1000)
    return optimizer
