"""The PPO baseline: one fixed configuration for every domain, like the paper's PPO comparison.

advantages.py   GAE(λ) under the loop's step convention, the return normaliser (NumPy)
losses.py       clipped surrogate, clipped value loss, the diagonal Gaussian (keras.ops)
networks.py     the actor and critic networks on DreamerV3's encoders (nets.Encoder)
rollout.py      the on-policy rollout buffer
agent.py        ``Agent``: the ``dreamer_tf.run.contracts.OnPolicyAgent`` the loop drives
"""
