"""DreamerV3 (Hafner et al.): the agent of the paper, following the official ``Agent.loss`` step by step.

agent.py         ``Agent`` and ``DreamerModel``: one model, one scalar loss, one optimizer (Algorithm 1)
world_model.py   encoder, RSSM, decoder, reward and continue heads; their losses
rssm.py          the recurrent state-space model (block GRU, categorical latents, free-nats KL)
behavior.py      actor, critic and slow critic on imagined trajectories; λ-returns, return normaliser
optim.py         LaProp with adaptive gradient clipping and warm-up
"""
