#!/usr/bin/env python
"""Pretrain GPT-2 with build-nanogpt's recipe under Accelerate.

    python run_pretrain.py --preset tiny --train_file input.txt          # CPU, minutes
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml run_pretrain.py --data_dir edu_fineweb10B

See `python run_pretrain.py --help` for every setting; the loop lives in nanogpt2/training.py.
"""

import os
import sys

from nanogpt2.sources import DataError
from nanogpt2.run_config import resolve_config
from nanogpt2.training import PretrainingLoop, TrainingError, TrainingInterrupted


def main(argv=None) -> int:
    try:
        config = resolve_config(argv)
        trainer = PretrainingLoop(config)
        checkpoint = trainer.train()
    except (ValueError, DataError, TrainingError, FileNotFoundError) as error:
        # Every process of `accelerate launch` meets the same error: the first one alone prints it.
        if int(os.environ.get("RANK", "0")) == 0:
            prefix = "stopped" if isinstance(error, TrainingInterrupted) else "error"
            print(f"{prefix}: {error}", file=sys.stderr, flush=True)
        return error.exit_code if isinstance(error, TrainingInterrupted) else 1
    if trainer.accelerator.is_main_process:
        print(f"done: {trainer.step} steps; checkpoint {checkpoint} loads with "
              "AutoModelForCausalLM.from_pretrained (after `import nanogpt2`, or with trust_remote_code=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
