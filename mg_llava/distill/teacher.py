"""The frozen teacher of a distillation run, and the checks that make teacher and student comparable.

The teacher is any trained model of this framework (LLaVA-1.5 mode or MG-LLaVA), loaded from its export folder
(`MGLLaVAModel.from_pretrained`) in bf16 by default, with `requires_grad=False` and in `eval()`. The
distillation model keeps it OUT of its module tree (see `FrozenTeacher`), so it is never given to the optimizer,
never wrapped by DDP/ZeRO, never in a checkpoint or an export: the reference wrapped its frozen 7B teacher in
DeepSpeed with an optimizer and loaded it in fp32 — its users' first out-of-memory cause (spec §11.1).
"""
import torch

from mg_llava.models import MGLLaVAModel


class FrozenTeacher:
    """Holds the teacher without registering it as a submodule; `.to()` follows the student's device lazily."""

    def __init__(self, model):
        model.requires_grad_(False)
        self.model = model.eval()

    def on(self, device):
        p = next(self.model.parameters())
        if p.device != device:
            self.model.to(device)
        return self.model


def load_teacher(path, torch_dtype='bfloat16'):
    """An export folder (or an already built MGLLaVAModel) -> FrozenTeacher."""
    if isinstance(path, MGLLaVAModel):
        return FrozenTeacher(path)
    dtype = getattr(torch, torch_dtype) if isinstance(torch_dtype, str) else torch_dtype
    return FrozenTeacher(MGLLaVAModel.from_pretrained(path, torch_dtype=dtype))


def check_compatible(teacher, student, where='distillation'):
    """Raise a ValueError naming every difference that would make token-level KD meaningless:
    - the tokenizers must agree over their shared vocabulary (logits are compared id by id);
    - both models must lay out the same visual tokens per sample (same ViT grid, same high-res view and object
      tokens): the student's preprocessing feeds both, so the sequences must align position by position.
    Returns the common vocabulary size the logits are sliced to."""
    problems = []
    ts, ss = teacher.tokenizer, student.tokenizer
    if ts is None or ss is None:
        problems.append('both models need a tokenizer to compare vocabularies')
    else:
        tv, sv = ts.get_vocab(), ss.get_vocab()
        t_by_id = {i: t for t, i in tv.items()}
        s_by_id = {i: t for t, i in sv.items()}
        shared = min(len(t_by_id), len(s_by_id))
        diff = [i for i in range(shared) if t_by_id.get(i) != s_by_id.get(i)]
        if diff:
            shown = ', '.join(f'id {i}: teacher {t_by_id.get(i)!r} vs student {s_by_id.get(i)!r}' for i in diff[:3])
            problems.append(f'the tokenizers differ on {len(diff)} of the {shared} shared ids ({shown}); '
                            'token-level KD needs the same vocabulary')
        if ts.eos_token_id != ss.eos_token_id:
            problems.append(f'eos ids differ (teacher {ts.eos_token_id}, student {ss.eos_token_id})')
    if teacher.num_image_tokens != student.num_image_tokens:
        problems.append(f'the teacher lays out {teacher.num_image_tokens} image tokens per image, the student '
                        f'{student.num_image_tokens}: use towers with the same token grid')
    t_spec, s_spec = teacher.vision_spec, student.vision_spec
    if (t_spec.image_size, t_spec.image_size_aux) != (s_spec.image_size, s_spec.image_size_aux):
        problems.append(f'vision specs differ (teacher image_size={t_spec.image_size}, '
                        f'image_size_aux={t_spec.image_size_aux}; student {s_spec.image_size}, '
                        f'{s_spec.image_size_aux}): the student\'s preprocessing feeds both models')
    t_obj, s_obj = teacher.bbox_projector is not None, student.bbox_projector is not None
    if t_obj != s_obj:
        problems.append(f'object tokens: teacher {"on" if t_obj else "off"}, student {"on" if s_obj else "off"}; '
                        'both must lay out the same visual slots')
    if problems:
        raise ValueError(f'{where}: teacher and student are not comparable: ' + '; '.join(problems))
    head_t = teacher.llm.get_output_embeddings().weight.shape[0]
    head_s = student.llm.get_output_embeddings().weight.shape[0]
    return min(head_t, head_s)


def same_weights(teacher_module, student_module):
    """Same tensor names and values, the student's cast to the teacher's dtype (a bf16 teacher loaded from the
    student's fp32 weights still counts as the same tower). Unmaterialised (meta) weights are never the same."""
    t, s = teacher_module.state_dict(), student_module.state_dict()
    if any(v.is_meta for v in (*t.values(), *s.values())):
        return False   # `xtuner convert pth_to_hf` builds on the meta device; nothing runs there
    return t.keys() == s.keys() and all(
        t[k].shape == s[k].shape and torch.equal(s[k].to(t[k].device, t[k].dtype), t[k]) for k in t)


def shares_towers(teacher, student):
    """Both models run the same frozen towers on the same pixels: the features can be computed once.
    Decided by the weights, not the configured paths: a teacher whose ViT was trained (its export holds the
    trained copy) and a student pointing at the ViT's original folder do NOT share."""
    pairs = [(teacher.visual_encoder, student.visual_encoder)]
    if teacher.visual_encoder_aux is not None or student.visual_encoder_aux is not None:
        pairs.append((teacher.visual_encoder_aux, student.visual_encoder_aux))
    frozen = student.policy.frozen_towers(student)
    return teacher.config.visual_select_layer == student.config.visual_select_layer and all(
        t is not None and s is not None and any(f is s for f in frozen) and same_weights(t, s) for t, s in pairs)
