"""LLaVA-MoD distillation: a trained student learns from a frozen teacher of this framework (mimic distillation,
preference distillation). The student's MoE up-cycling lives with the models (mg_llava.models.moe)."""
