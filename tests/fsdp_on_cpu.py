"""Run ``vlm-grpo`` under accelerate's FSDP on CPU processes (gloo): for the tests, not for users.

``accelerate launch --config_file scripts/configs/accelerate/fsdp2.yaml tests/fsdp_on_cpu.py train ...``

accelerate 1.15 takes FSDP only when the processes are on GPUs (``AcceleratorState.__init__``
switches to ``DistributedType.FSDP`` inside a branch for ``MULTI_GPU``, ``MULTI_XPU``, ...;
``MULTI_CPU`` is not among them), so with ``use_cpu`` an FSDP launch trains as DDP, which
``vlm_grpo.engines`` refuses. torch 2.13's FSDP2 (``fully_shard``) itself runs on CPU tensors over
gloo. This launcher lifts that one check, exactly as the GPU branch would: after the state is set
up, a ``MULTI_CPU`` state given an FSDP plugin becomes ``FSDP`` with that plugin (in both the
accelerator's and the process's shared state). Everything else is accelerate's own FSDP2 path
(``fsdp2_prepare_model``, ``fully_shard`` of the wrapped layer classes, sharded checkpoints through
torch.distributed.checkpoint), TRL's (its reference model through ``prepare_fsdp``) and this
project's.
"""

from __future__ import annotations

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_plain_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _plain_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as the GPU branch does


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    from vlm_grpo.cli import main

    sys.exit(main(sys.argv[1:]))
