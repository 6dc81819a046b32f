"""LLaVA-MoD distillation models (mg_llava.distill): the frozen teacher stays out of the optimizer, checkpoints
and exports; incompatible teachers are refused up front; KD / preference losses at their fixed points; the
preference data path; the RLAIF-V converter."""
import json

import pytest
import torch

from mg_llava.data import MGLLaVADataset, mg_llava_collate_fn
from mg_llava.models import MGLLaVAModel

SPEC = dict(image_size=112, image_size_aux=256)


def student_kwargs(assets, **kw):
    base = dict(llm=assets['llm'], tokenizer=assets['tokenizer'], visual_encoder=assets['clip_vit'],
                visual_encoder_aux=assets['convnext'], vision_spec=SPEC, freeze_llm=False,
                use_activation_checkpointing=False)
    return dict(base, **kw)


@pytest.fixture(scope='module')
def teacher_dir(tiny_assets, tmp_path_factory):
    """A 'trained' teacher: the tiny model with every trained part perturbed, exported like pth_to_hf."""
    torch.manual_seed(1)
    model = MGLLaVAModel(**student_kwargs(tiny_assets))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    out = tmp_path_factory.mktemp('teacher') / 'export'
    model.save_pretrained(str(out), fp32=True)
    return str(out)


def sft_batch(model, tiny_world, n=3):
    ds = MGLLaVADataset(tiny_world['sft'], tiny_world['images'], model.tokenizer, 'vicuna', max_length=256,
                        vision_spec=SPEC, num_image_tokens=model.num_image_tokens,
                        box_json_path=tiny_world['boxes'])
    return mg_llava_collate_fn([ds[i] for i in range(n)], return_hf_format=True)


def mimic(tiny_assets, teacher, **kw):
    from mg_llava.distill.mimic import MimicDistillLLaVAModel
    torch.manual_seed(0)
    return MimicDistillLLaVAModel(student=student_kwargs(tiny_assets), teacher=teacher, teacher_dtype='float32',
                                  **kw)


def test_teacher_is_not_trained_saved_or_exported(tiny_assets, tiny_world, teacher_dir, tmp_path):
    model = mimic(tiny_assets, teacher_dir, loss_type='kd_lm').train()
    teacher_params = {id(p) for p in model.teacher.parameters()}
    assert teacher_params and not teacher_params & {id(p) for p in model.parameters()}   # not in any param group
    assert not any(p.requires_grad for p in model.teacher.parameters()) and not model.teacher.training
    assert all(k.startswith('student.') for k in model.state_dict())                    # nor in checkpoints
    assert set(model.state_dict()) == {f'student.{k}' for k in model.student.state_dict()}
    losses = model(sft_batch(model.student, tiny_world), mode='loss')
    assert set(losses) == {'loss_kd', 'loss_lm'} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with pytest.raises(ValueError, match="mode must be 'loss' or 'tensor', got 'predict'"):
        model(sft_batch(model.student, tiny_world), mode='predict')
    assert all(p.grad is None for p in model.teacher.parameters())
    model.save_pretrained(str(tmp_path / 'export'), fp32=True)                          # nor in exports
    meta = json.loads((tmp_path / 'export' / 'mg_llava_config.json').read_text())
    assert meta['config']['llm'] == tiny_assets['llm'] or meta['saved']['llm'] == 'llm'
    back = MGLLaVAModel.from_pretrained(str(tmp_path / 'export'))
    batch = sft_batch(back, tiny_world)
    with torch.no_grad():
        torch.testing.assert_close(back(batch, mode='loss')['loss'],
                                   model.student.eval()(batch, mode='loss')['loss'])


def test_student_equal_to_teacher_has_zero_kl_and_no_gradient(tiny_assets, tiny_world, teacher_dir):
    from mg_llava.distill.mimic import MimicDistillLLaVAModel
    student = MGLLaVAModel.from_pretrained(teacher_dir)
    student.policy.freeze_llm = False
    model = MimicDistillLLaVAModel(student=student, teacher=teacher_dir, teacher_dtype='float32')
    assert model.share_towers   # same frozen towers: features computed once
    loss = model(sft_batch(student, tiny_world), mode='loss')['loss_kd']
    assert abs(loss.item()) < 1e-5
    loss.backward()
    grads = [p.grad.abs().max().item() for p in student.projector.parameters() if p.grad is not None]
    assert grads and max(grads) < 1e-5


def test_towers_are_shared_only_when_their_weights_are_the_same(tiny_assets, teacher_dir, tmp_path):
    """A teacher whose ViT was trained (its export holds the trained copy) must run its own ViT even though the
    student's config names the ViT's original folder, which the teacher's config also names."""
    from mg_llava.distill.teacher import shares_towers
    trained = MGLLaVAModel.from_pretrained(teacher_dir)
    trained.policy.freeze_visual_encoder = False
    with torch.no_grad():
        next(trained.visual_encoder.parameters()).add_(0.01)
    trained.save_pretrained(str(tmp_path / 'trained_vit'), fp32=True)
    assert not mimic(tiny_assets, str(tmp_path / 'trained_vit')).share_towers
    student = mimic(tiny_assets, teacher_dir).student
    bf16 = MGLLaVAModel.from_pretrained(teacher_dir, torch_dtype=torch.bfloat16)
    assert shares_towers(bf16, student)   # same weights, loaded in the teacher's dtype


def test_incompatible_teachers_are_refused(tiny_assets, tiny_world, tmp_path):
    from mg_llava.demo.tiny_assets import build_tiny_assets
    other = build_tiny_assets(tmp_path / 'other', vocab_words=['zebra', 'quokka', 'vole'], llm_hidden=32,
                              llm_layers=1, llm_intermediate=64)
    t = MGLLaVAModel(**student_kwargs(other))
    t.save_pretrained(str(tmp_path / 'vocab_teacher'), fp32=True)
    with pytest.raises(ValueError, match='the tokenizers differ on'):
        mimic(tiny_assets, str(tmp_path / 'vocab_teacher'))
    grid = build_tiny_assets(tmp_path / 'grid', world_dir=tiny_world['root'], llm_hidden=32, llm_layers=1,
                             llm_intermediate=64, clip_kwargs=dict(image_size=56))
    t = MGLLaVAModel(**student_kwargs(dict(grid, tokenizer=tiny_assets['tokenizer']),
                                      vision_spec=dict(image_size=56, image_size_aux=256)))
    t.save_pretrained(str(tmp_path / 'grid_teacher'), fp32=True)
    with pytest.raises(ValueError, match=r'the teacher lays out 16 image tokens per image, the student 64'):
        mimic(tiny_assets, str(tmp_path / 'grid_teacher'))


def preference_json(tiny_world, path, n=4):
    recs = [r for r in json.load(open(tiny_world['sft'])) if r.get('image')][:n]
    out = []
    for r in recs:
        q, a = r['conversations'][0]['value'], r['conversations'][1]['value']
        out.append(dict(id=r['id'], image=r['image'], question=q.replace('<image>\n', ''), chosen=a,
                        rejected='purple' if a != 'purple' else 'green'))
    path.write_text(json.dumps(out))
    return str(path)


def test_preference_dataset_and_policy_equal_reference(tiny_assets, tiny_world, teacher_dir, tmp_path):
    from mg_llava.data.preference import PreferenceDataset, preference_collate_fn
    from mg_llava.distill.preference import PreferenceDistillLLaVAModel
    student = MGLLaVAModel.from_pretrained(teacher_dir)
    ds = PreferenceDataset(preference_json(tiny_world, tmp_path / 'pref.json'), tiny_world['images'],
                           student.tokenizer, 'vicuna', max_length=256, vision_spec=SPEC,
                           num_image_tokens=student.num_image_tokens, box_json_path=tiny_world['boxes'])
    sample = ds[0]
    assert sample['input_ids'][:-3] != sample['rejected_input_ids'][:-3] or \
        sample['input_ids'] != sample['rejected_input_ids']
    batch = preference_collate_fn([ds[i] for i in range(3)], return_hf_format=True)
    assert batch['input_ids'].shape[0] == 6 and batch['num_pairs'] == 3 and batch['pixel_values'].shape[0] == 6
    for kind, want in (('sigmoid', torch.log(torch.tensor(2.0))), ('kto_pair', torch.tensor(0.5))):
        model = PreferenceDistillLLaVAModel(student=student, teacher=teacher_dir, loss_type=kind,
                                            teacher_dtype='float32')
        out = model(batch, mode='loss')
        torch.testing.assert_close(out['loss'], want, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="mode must be 'loss', got 'tensor'"):
            model(batch, mode='tensor')
        assert {'rewards_chosen', 'rewards_rejected', 'margins', 'accuracy'} <= set(out)


def test_convert_rlaif_v_parquet(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        'convert_rlaif_v', Path(__file__).resolve().parents[1] / 'tools' / 'convert_rlaif_v.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    convert = tool.convert
    buf = io.BytesIO()
    Image.new('RGB', (8, 8), (255, 0, 0)).save(buf, format='PNG')
    rows = [dict(idx='a1', question='What colour?', chosen='Red.', rejected='Blue.', image={'bytes': buf.getvalue()}),
            dict(idx='a2', question='', chosen='x', rejected='y', image={'bytes': buf.getvalue()})]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / 'part.parquet')
    n, skipped = convert([str(tmp_path / 'part.parquet')], str(tmp_path / 'pref.json'), str(tmp_path / 'img'))
    recs = json.loads((tmp_path / 'pref.json').read_text())
    assert n == 1 and len(skipped) == 1 and 'row 1' in skipped[0] and 'question' in skipped[0]
    assert recs[0]['image'] == 'a1.png' and (tmp_path / 'img' / 'a1.png').is_file()
    assert recs[0]['chosen'][0] == {'from': 'human', 'value': '<image>\nWhat colour?'}
    assert recs[0]['rejected'][1] == {'from': 'gpt', 'value': 'Blue.'}


def test_moe_student_export_reloads_and_reads_as_transformers_qwen2_moe(tiny_assets, tmp_path):
    """An up-cycled Qwen2 student: save_pretrained -> from_pretrained gives the same logits, and the export's
    llm_qwen2_moe/ loads as a plain Qwen2MoeForCausalLM with the same logits (eval: nothing dropped)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, Qwen2MoeForCausalLM
    tok = AutoTokenizer.from_pretrained(tiny_assets['tokenizer'])
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=256, tie_word_embeddings=True))
    qwen.save_pretrained(tmp_path / 'qwen2')
    model = MGLLaVAModel(llm=str(tmp_path / 'qwen2'), tokenizer=tiny_assets['tokenizer'],
                         visual_encoder=tiny_assets['clip_vit'], use_activation_checkpointing=False,
                         freeze_llm=True, llm_train_modules=('mlp.',), moe=dict(num_experts=4, top_k=2))
    assert model.moe_layers == [0, 2]
    trained = {n for n, p in model.llm.named_parameters() if p.requires_grad}
    assert trained and all('mlp.' in n for n in trained)   # FFNs, experts, routers: the D2S/PD set
    with torch.no_grad():   # make experts and routers differ from the dense copies
        for n, p in model.llm.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(tmp_path / 'out'), fp32=True)
    ids = torch.tensor([tok.encode('what colour is the shape', add_special_tokens=False)])
    model.eval()
    with torch.no_grad():
        want = model.llm(input_ids=ids).logits
        back = MGLLaVAModel.from_pretrained(str(tmp_path / 'out'))
        torch.testing.assert_close(back.llm(input_ids=ids).logits, want)
        hf = Qwen2MoeForCausalLM.from_pretrained(str(tmp_path / 'out' / 'llm_qwen2_moe')).eval()
        torch.testing.assert_close(hf(input_ids=ids).logits, want, rtol=1e-4, atol=1e-5)
