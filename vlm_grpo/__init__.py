"""vlm-grpo: R1-style GRPO fine-tuning for vision-language models on TRL.

Importing the package does nothing; the modules are loaded on use.
"""

__version__ = "0.1.0"
