"""What several test modules share: gradients on either backend, environment rollouts, CLI runs,
and the report's image check."""
