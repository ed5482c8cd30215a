"""The fine-tuning arms, each a registered entry (`dcv.arms.registry`): its params schema and its trainer.

    sft      supervised fine-tuning on one fixed completion form (TRL SFTTrainer)
    rl       GRPO with a 0/1 reward that accepts every correct form (TRL GRPOTrainer)
    protect  SFT plus a penalty that keeps the base's circuit heads doing their base job (circuit protection)
    rl_sft   the study's RL: Dr.GRPO without KL, continued from an SFT checkpoint (`init`, `init_step`)

An arm trains only: every checkpoint it saves (`models/<arm>/seed-<s>/checkpoints/step-<n>/`, `dcv.layout`) is
measured once, later, by stage evaluate-forgetting. Nothing in this package knows about DVC or params.yaml.

Adding an arm is adding its module to `MODULES`: the module defines its config and calls `register`. The modules
are imported by name, so that code which only looks an arm up does not statically depend on every arm's trainer
(the dvc.yaml deps of an arm's stage are its own module's, see tests/test_deps.py).
"""

from importlib import import_module

from dcv.arms.registry import REGISTRY, Arm, TrainJob, register

MODULES = ("dcv.arms.sft", "dcv.arms.rl", "dcv.arms.protect", "dcv.arms.rl_sft")
for _m in MODULES:
    import_module(_m)

__all__ = ["MODULES", "REGISTRY", "Arm", "TrainJob", "register"]
