"""DreamerV3 in Keras 3 (TensorFlow and JAX), with the benchmark harness of the paper's domains.

dreamerv3/       the algorithm: agent, world model, RSSM, actor-critic, optimizer
ppo/             the PPO baseline
keras_agent.py   what both Keras agents share (precision, seeds, compiled runner, checkpoints)
random_agent.py  the uniform-random baseline
nn/              network blocks, distributions and pure ops (keras.ops only)
backend.py       the compiled policy and train steps: the one module that imports TensorFlow or JAX
run/             the training loop, replay, checkpoints, logging and the ``dreamer-tf`` command
envs/            the domains behind one environment contract
harness/         the sweep, the report, the learning check, run packs and the parity harness
config.py        configs.yaml presets, overrides and validation
spaces.py        observation and action spaces
"""
