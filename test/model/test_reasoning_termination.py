"""How reasoning ends, against upstream's rules (reference §3.4, §7, §12), with forced tokens on the tiny model.

Upstream decodes with `generate` and `StopAfterEOS`: the cache lags the sequences by one token, a row
that emits <|im_end|> is padded with <|endoftext|> while the others go on, and a row without
<|traj_future_start|> puts its flow tokens after its whole sequence (offset = sequence length). The
oracle below replays those rules literally on scripted tokens: an HF-style loop, teacher-forced feeding
of `sequences[:, :-1]`, the reference's offset / mask / position formulas and the transformers expert
forward over a `DynamicCache`. Our `decode` + `expert_context` + `velocity` must give the same velocity.
"""

import pytest
import torch

from conftest import prefilled
from tolerances import EXPERT_ULPS, TEXT_ULPS, close

# Our expert pass vs the transformers one over the same cache: the expert's arithmetic.
VELOCITY_ULPS = EXPERT_ULPS  # measured 0 (bitwise)
# A row decoded in a batch vs alone: the decode steps' text arithmetic reaches the cache, then the expert's.
SAME_RESULT_ULPS = TEXT_ULPS + EXPERT_ULPS  # measured worst 1.1
CHANGED = 1e-4  # an extra or missing prefix column moves the velocity far more than this
FILLER = ord("z")  # what a script emits once it has run out of tokens


def text(tokenizer, value):
    return tokenizer.encode(value, add_special_tokens=False)


def scripts(model, name):
    """Per-row scripted tokens and the token limit for each case."""
    ids, tok = model.token_ids, model.prompt_encoder.tokenizer
    tfs, eos, cot_end = ids.traj_future_start, ids.eos, ids.cot_end
    return {
        "one sample reaches the limit": ([text(tok, "Slow down: pedestrian")], 6),
        "one sample ends in im_end": ([text(tok, "ab") + [eos]], 8),
        "tfs at the last allowed step": ([text(tok, "abc") + [tfs]], 4),
        "two samples, one ends in im_end": ([text(tok, "ab") + [eos], text(tok, "abcd") + [cot_end, tfs]], 10),
        "two samples end at different steps": ([text(tok, "a") + [cot_end, tfs], text(tok, "abc") + [cot_end, tfs]], 12),
        "tfs then im_end beside an im_end row": ([text(tok, "a") + [tfs] + text(tok, "b") + [eos], text(tok, "ab") + [eos]], 9),
    }[name]


CASES = ["one sample reaches the limit", "one sample ends in im_end", "tfs at the last allowed step",
         "two samples, one ends in im_end", "two samples end at different steps", "tfs then im_end beside an im_end row"]


def force(model, monkeypatch, rows):
    """Make `decode` draw the scripted tokens (row r's k-th token at step k)."""
    step = [0]

    def next_tokens(logits, greedy, temperature, top_p, generator):
        k = step[0]
        step[0] += 1
        return torch.tensor([row[k] if k < len(row) else FILLER for row in rows], device=logits.device)

    monkeypatch.setattr(model, "_next_tokens", next_tokens)


def upstream_sequences(model, rows, max_new_tokens):
    """The generated part of `generate`'s sequences: HF's sampling loop with `StopAfterEOS`."""
    ids = model.token_ids
    finished, eos_found, out = [False] * len(rows), None, []
    for step in range(max_new_tokens):
        tokens = [ids.pad if finished[r] else (row[step] if step < len(row) else FILLER) for r, row in enumerate(rows)]
        out.append(tokens)
        # StopAfterEOS: True once every row had <|traj_future_start|> at an earlier step.
        stop_after_eos = eos_found is not None and all(eos_found)
        if not stop_after_eos:
            eos_found = [(eos_found[r] if eos_found else False) or t == ids.traj_future_start for r, t in enumerate(tokens)]
        finished = [f or t == ids.eos for f, t in zip(finished, tokens)]
        if stop_after_eos or all(finished) or step == max_new_tokens - 1:
            break
    return [list(row) for row in zip(*out)]


def upstream_velocity(model, drive, sequences, x, t):
    """The reference's expert step (`alpamayo_r1.py` step_fn) after `generate` produced `sequences`."""
    ids, rows, waypoints = model.token_ids, len(sequences), x.shape[1]
    _, cache, rope_delta = prefilled(model, drive, rows)
    prompt = cache.get_seq_length()
    generated = torch.tensor(sequences)
    text_model = model.vlm.model.language_model
    for k in range(generated.shape[1] - 1):  # the last sampled token is never fed
        position = (cache.get_seq_length() + rope_delta).view(1, rows, 1).expand(3, rows, 1)
        text_model(input_ids=generated[:, k:k + 1], position_ids=position, past_key_values=cache, use_cache=True)
    length = cache.get_seq_length()
    seq_len = prompt + generated.shape[1]
    has = (generated == ids.traj_future_start).any(dim=1)
    first = (generated == ids.traj_future_start).int().argmax(dim=1)
    offset = torch.where(has, prompt + first, torch.full_like(first, seq_len - 1)) + 1
    positions = (torch.arange(waypoints) + rope_delta + offset[:, None]).unsqueeze(0).expand(3, rows, waypoints)
    mask = torch.zeros(rows, 1, waypoints, length + waypoints)
    for r in range(rows):
        mask[r, :, :, offset[r]:length] = torch.finfo(mask.dtype).min
    out = model.expert(inputs_embeds=model.action_in_proj(x, t), position_ids=positions, past_key_values=cache,
                       attention_mask=mask, use_cache=True, is_causal=False)
    velocity = model.action_out_proj(out.last_hidden_state[:, -waypoints:]).float()
    return velocity, dict(length=length, offset=offset, positions=positions, hidden=mask[:, :, :, :length] != 0)


def flow_state(rows, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 64, 2, generator=generator), torch.full((rows, 1, 1), 0.4)


def our_velocity(model, drive, monkeypatch, rows, max_new_tokens, x, t, early_stop=False):
    force(model, monkeypatch, rows)
    logits, cache, rope_delta = prefilled(model, drive, len(rows))
    rollout = model.decode(logits, cache, rope_delta, max_new_tokens, True, 1.0, 1.0, torch.Generator(),
                           early_stop=early_stop)
    context = model.expert_context(rollout)
    return model.velocity(x, t, context), rollout, context


@pytest.mark.parametrize("case", CASES)
@torch.inference_mode()
def test_expert_reads_the_prefix_upstream_leaves(tiny_model, drive, monkeypatch, case):
    rows, limit = scripts(tiny_model, case)
    sequences = upstream_sequences(tiny_model, rows, limit)
    x, t = flow_state(len(rows))
    expected, ref = upstream_velocity(tiny_model, drive, sequences, x, t)
    velocity, rollout, context = our_velocity(tiny_model, drive, monkeypatch, rows, limit, x, t)
    assert rollout.length == ref["length"]
    assert torch.equal(rollout.offsets, ref["offset"])
    assert torch.equal(context.position_ids, ref["positions"])
    assert torch.equal(context.mask[:, :, :, :rollout.length] != 0, ref["hidden"])
    assert rollout.complete == [tiny_model.token_ids.traj_future_start in row for row in sequences]
    close(velocity, expected, VELOCITY_ULPS, "our velocity vs upstream's")


@torch.inference_mode()
def test_reference_decodes_past_an_im_end_row_and_early_stop_does_not(tiny_model, drive, monkeypatch):
    rows, limit = scripts(tiny_model, "two samples, one ends in im_end")
    x, t = flow_state(2)
    reference, ref_rollout, _ = our_velocity(tiny_model, drive, monkeypatch, rows, limit, x, t)
    early, early_rollout, _ = our_velocity(tiny_model, drive, monkeypatch, rows, limit, x, t, early_stop=True)
    assert ref_rollout.steps == limit  # the <|im_end|> row kept the batch going to the limit
    ended = rows[1].index(tiny_model.token_ids.traj_future_start) + 1
    assert early_rollout.steps == ended  # stopped once the other row's <|traj_future_start|> was fed
    assert early_rollout.tokens == ref_rollout.tokens == [rows[0], rows[1]]
    # Early stop gives each row the prefix it has alone: its result equals a one-sample run.
    for r in range(2):
        alone, _, _ = our_velocity(tiny_model, drive, monkeypatch, [rows[r]], limit, x[r:r + 1], t[r:r + 1])
        close(early[r:r + 1], alone, SAME_RESULT_ULPS, "early-stopped row vs alone")
    close(early[1], reference[1], SAME_RESULT_ULPS, "early-stopped vs reference row")  # same visible prefix
    assert (early[0] - reference[0]).abs().max() > CHANGED  # the im_end row: pads read or not


def upstream_cot(model, prompt_ids, sequences):
    """`extract_text_tokens(...)["cot"]` over the padded sequences as upstream returns them."""
    ids, tok = model.token_ids, model.prompt_encoder.tokenizer
    out = []
    for row in sequences:
        if ids.traj_future_start in row:  # `replace_padding_after_eos`
            end = row.index(ids.traj_future_start) + 1
            row = row[:end] + [ids.pad] * (len(row) - end)
        decoded = tok.decode(prompt_ids + row, skip_special_tokens=False)
        before_end, sep, _ = decoded.partition("<|cot_end|>")
        start = before_end.rfind("<|cot_start|>")
        out.append("" if not sep else (before_end[start + len("<|cot_start|>"):] if start != -1 else before_end).strip())
    return out


def test_reasoning_is_upstreams_cot_and_the_unfinished_text_is_kept_apart(tiny_model, drive, monkeypatch):
    ids, tok = tiny_model.token_ids, tiny_model.prompt_encoder.tokenizer
    cot_start = ids.special["cot_start"]
    rows = [text(tok, " Slow down: pedestrian"),  # the limit, no <|cot_end|>
            text(tok, " Yield ") + [ids.cot_end, ids.traj_future_start],
            text(tok, "ab") + [cot_start] + text(tok, " cd ") + [ids.cot_end, ids.traj_future_start],
            text(tok, "Stop") + [ids.eos]]  # <|im_end|>, no <|cot_end|>
    limit = len(rows[0])  # row 0 ends at the limit with its last scripted token
    force(tiny_model, monkeypatch, rows)
    pred = tiny_model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, num_samples=4, greedy=True,
                             max_reasoning_tokens=limit, diffusion_steps=1)
    prompt = tiny_model.encode_inputs(drive.images, drive.ego_history_xyz).input_ids[0].tolist()
    assert pred.reasoning == upstream_cot(tiny_model, prompt, upstream_sequences(tiny_model, rows, limit))
    assert pred.reasoning == ["", "Yield", "cd", ""]
    assert pred.reasoning_closed == [False, True, True, False]
    assert pred.partial_reasoning == ["Slow down: pedestrian", "Yield", "cd", "Stop"]
    assert pred.complete == [False, True, True, False]


def test_clear_vision_cache_forgets_the_kept_encodings(drive):
    from alpamayo_ros.model.loading import tiny

    model = tiny(seed=0)
    keys = [(cam, frame) for cam in range(4) for frame in range(4)]
    args = dict(greedy=True, max_reasoning_tokens=2, diffusion_steps=1, image_keys=keys)
    model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, **args)
    assert len(model.vision_cache) == 16
    model.clear_vision_cache()
    assert len(model.vision_cache) == 0
    misses = model.vision_cache.misses
    model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, **args)
    assert model.vision_cache.misses == misses + 16  # encoded again, not taken from the cache
