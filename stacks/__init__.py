"""CDK stacks: one module per stack; a stack instantiates constructs and connects them, nothing else."""
