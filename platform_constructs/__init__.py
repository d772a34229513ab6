"""Reusable L3 constructs, one logical unit per module.

Not ``constructs/``: a top-level package of that name would hide the ``constructs`` library that
aws-cdk-lib and cdk8s import.
"""
