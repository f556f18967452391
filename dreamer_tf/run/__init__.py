"""Running an agent: the loop and everything around it.

contracts.py    the interfaces the loop drives (agents, on-policy agents)
loop.py         the training loop: acting, replay, updates, evaluation, checkpoints, signals
replay.py       the replay buffer (uniform, with stored latents for replay context)
checkpoint.py   atomic checkpoints of agent, replay and loop state
metrics.py      scores.jsonl, metrics.jsonl, TensorBoard and the console
train.py        the ``dreamer-tf`` command (``python -m dreamer_tf``)
"""
