#!/usr/bin/env python
"""Pretrain GPT-2 with build-nanogpt's recipe under Accelerate.

    python run_pretrain.py --preset tiny --train_file input.txt          # CPU, minutes
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml run_pretrain.py --data_dir edu_fineweb10B

See `python run_pretrain.py --help` for every setting; the loop lives in nanogpt2/training.py.
"""

import sys

from nanogpt2.errors import cli
from nanogpt2.run_config import resolve_config
from nanogpt2.training import PretrainingLoop


@cli
def main(argv=None) -> int:
    trainer = PretrainingLoop(resolve_config(argv))
    checkpoint = trainer.train()
    if trainer.accelerator.is_main_process:
        print(f"done: {trainer.step} steps; checkpoint {checkpoint} loads with "
              "AutoModelForCausalLM.from_pretrained (after `import nanogpt2`, or with trust_remote_code=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
