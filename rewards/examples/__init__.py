"""Example user rewards (load them as ``rewards.examples.<module>:<function>``)."""
