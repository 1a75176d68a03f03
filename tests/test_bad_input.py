"""Bad input: every case ends in a clear error that names the value and the fix, or in a correct result.

Each test uses the real component (loaders on files written here, tiny transformers models, the
real pipeline and CLI). "No deep traceback" is checked where the error crosses the command line.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import pickle
import struct
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from pas.config import ConfigError, validate_run_config
from pas.data.datamodule import PASDataModule
from pas.data.prompts import PromptBuilder, PromptFormat, render_prompt
from pas.data.schema import DataError, MCItem
from pas.data.sources.common import row_error_policy
from pas.data.sources.generic import load_generic
from pas.data.splits import split_items
from pas.data.truncation import PromptTooLongError
from pas.errors import UserError
from pas.evaluation.scoring import forward_letter_scores, letter_token_ids
from pas.io import OutputDirError, prepare_output_dir
from pas.models.layers import LayerLookupError, find_site_module
from pas.models.loading import LoadedModel, ModelLoadError, load_model
from pas.pipeline import run
from pas.steering.hooks import add_at_site
from pas.steering.sweep import GridError, check_grid
from pas.steering.vector import SteeringVector, VectorFileError
from tests.helpers import make_items, tiny_llama, tiny_tokenizer
from tests.test_train import _cli, _compose, _output, _overrides, _save_model, _write_task

# ---------------------------------------------------------------------------
# Rows of data files


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def _row(i: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {"id": f"q{i}", "question": f"question {i}?", "choices": ["yes", "no", "maybe"]}
    row["answer"] = i % 3
    row.update(changes)
    return row


def _load(path: Path, **kwargs: object) -> list[MCItem]:
    return load_generic(str(path), id_field="id", **kwargs)  # type: ignore[arg-type]


def test_invalid_json_row_names_file_and_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0), "{not json", _row(2)])
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: invalid JSON") as info:
        _load(path)
    assert "Fix or remove this row" in str(info.value)


def test_truncated_last_jsonl_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0), _row(1)])
    path.write_text(path.read_text() + json.dumps(_row(2))[:25])
    with pytest.raises(DataError, match=r"d\.jsonl, line 3: invalid JSON"):
        _load(path)


def test_truncated_jsonl_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0), "{not json", _row(2), _row(3)])
    path.write_text(path.read_text() + json.dumps(_row(4))[:25])
    with caplog.at_level(logging.WARNING), row_error_policy("skip") as skipped:
        items = _load(path)
    assert [item.id for item in items] == ["q0", "q2", "q3"]
    assert skipped.count == 2
    assert "line 2" in caplog.text
    assert "line 5" in caplog.text


def test_row_errors_skipped_in_every_field(tmp_path: Path) -> None:
    rows = [_row(0), _row(1, answer=7), _row(2, choices=["only"]), _row(3, question=""), _row(4)]
    with row_error_policy("skip") as skipped:
        items = _load(_jsonl(tmp_path / "d.jsonl", rows))
    assert [item.id for item in items] == ["q0", "q4"]
    assert skipped.count == 3


def test_on_error_value_checked() -> None:
    with (
        pytest.raises(DataError, match="data.on_error must be 'raise' or 'skip', got 'ignore'"),
        row_error_policy("ignore"),
    ):
        pass


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,question,choices,answer\nq0,Q?,"[""a"",""b""]",0\nq1,Q?,"[""a"",""b""]"\n')
    with pytest.raises(DataError, match=r"d\.csv, line 3: the row has 3 fields but the header has 4"):
        _load(path)


def test_truncated_csv_unclosed_quote(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,question,choices,answer\nq0,Q?,"[""a"",""b""]",0\nq1,"Q cut off')
    with pytest.raises(DataError, match=r"d\.csv, line \d+: invalid CSV") as info:
        _load(path)
    assert "Fix the quoting" in str(info.value)


def test_csv_bad_rows_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = ['q0,Q0?,"[""a"",""b""]",0', "q1,Q1?", 'q2,Q2?,"[""a"",""b""]",1', 'q3,Q3?,"[""a"",""b""]",5']
    path.write_text("id,question,choices,answer\n" + "\n".join(rows) + "\n")
    with row_error_policy("skip") as skipped:
        items = _load(path)
    assert [item.id for item in items] == ["q0", "q2"]
    assert skipped.count == 2


def test_missing_field_lists_present_fields(tmp_path: Path) -> None:
    row = _row(0)
    del row["choices"]
    with pytest.raises(DataError, match=r"line 1: field 'choices' is missing; the row has the fields") as info:
        _load(_jsonl(tmp_path / "d.jsonl", [row]))
    assert "'answer'" in str(info.value)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0), _row(1), _row(0, question="again?")])
    with pytest.raises(DataError, match=r"Duplicate item id 'q0' at .*line 1 and at .*line 3") as info:
        _load(path)
    assert "Make the values of 'id' unique" in str(info.value)


def test_duplicate_ids_skip_keeps_first(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0), _row(1), _row(0, question="again?")])
    with row_error_policy("skip") as skipped:
        items = _load(path)
    assert [item.question for item in items] == ["question 0?", "question 1?"]
    assert skipped.count == 1


def test_answer_index_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"field 'answer' must be a choice index in 0\.\.2, got 3"):
        _load(_jsonl(tmp_path / "d.jsonl", [_row(0, answer=3)]))


def test_answer_letter_out_of_range(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0, answer="D")])
    with pytest.raises(DataError, match=r"field 'answer' is 'D', but the row has only 3 choices \(A to C\)"):
        _load(path, answer_format="letter")


def test_answer_text_matching_no_choice(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0, answer="perhaps")])
    with pytest.raises(DataError, match=r"'perhaps', which must equal exactly one choice; none of"):
        _load(path, answer_format="text")


def test_answer_of_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"field 'answer' must be an integer, got str 'two'"):
        _load(_jsonl(tmp_path / "d.jsonl", [_row(0, answer="two")]))


def test_one_choice_is_too_few(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0, choices=["only"], answer=0)])
    with pytest.raises(DataError, match=r"line 1: field 'choices' must contain at least 2 choices, got \['only'\]"):
        _load(path)


def test_27_choices_are_too_many(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0, choices=[f"c{i}" for i in range(27)], answer=0)])
    with pytest.raises(DataError, match=r"needs 2 to 26 choices \(one letter each\), got 27"):
        _load(path)


def test_26_choices_are_accepted(tmp_path: Path) -> None:
    items = _load(_jsonl(tmp_path / "d.jsonl", [_row(0, choices=[f"c{i}" for i in range(26)], answer=25)]))
    assert items[0].n_choices == 26
    assert items[0].target_letter == "Z"


def test_empty_question(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"line 1: field 'question' is empty"):
        _load(_jsonl(tmp_path / "d.jsonl", [_row(0, question="   ")]))


def test_empty_choice(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(0, choices=["yes", "", "maybe"])])
    with pytest.raises(DataError, match=r"choices at positions \[1\] are empty strings"):
        _load(path)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(_row(0)).encode() + b"\n" + b'{"id": "q1", "question": "caf\xe9?"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: byte b'\\xe9' is not valid UTF-8") as info:
        _load(path)
    assert "Save the file as UTF-8" in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"No items in .*d\.jsonl. Check that the file has data rows"):
        _load(path)


def test_split_too_small() -> None:
    with pytest.raises(DataError, match=r"max_sample_size must be at least 3"):
        split_items(make_items(10), seed=0, max_sample_size=2, fractions=(0.6, 0.2, 0.2), task="t")
    with pytest.raises(DataError, match=r"sizes would be"):
        split_items(make_items(3), seed=0, max_sample_size=None, fractions=(0.8, 0.1, 0.1), task="t")


def test_data_text_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    path = _jsonl(tmp_path / "d.jsonl", [_row(0, question=payload, choices=[payload, "{{ 7*7 }}"], answer=0)])
    items = _load(path)
    text = render_prompt(items[0], PromptFormat(chat_template=True), tiny_tokenizer())
    assert items[0].question == payload
    assert "{{ 7*7 }}" in text  # a choice is data, not template code
    assert not marker.exists()


# ---------------------------------------------------------------------------
# Config and grid


def _config(tmp_path: Path, *extra: str):  # noqa: ANN202
    return _compose(_overrides(tmp_path / "model", tmp_path / "items.jsonl", tmp_path / "out", *extra))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.strengths=[1,nan]", "method.strengths must be finite numbers, got [nan]"),
        ("method.strengths=[inf]", "method.strengths must be finite numbers, got [inf]"),
        ("method.strengths=[]", "method.strengths is empty; list at least one strength"),
        ("method.layers=[]", "method.layers must be null (automatic) or a non-empty list of integers"),
        ("method.site=neuron", "method.site must be one of ['residual', 'attn', 'mlp', 'post_attn_norm']"),
        ("method.variants=[pasx]", "method.variants must be a non-empty subset of"),
        ("data.on_error=ignore", "data.on_error must be 'raise' or 'skip', got 'ignore'"),
        ("data.split=[0.5,0.5,0.5]", "data.split must be three positive fractions summing to 1"),
        ("data.max_sample_size=2", "data.max_sample_size must be null or an integer >= 3"),
    ],
)
def test_invalid_config_values(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_run_config(_config(tmp_path, override))
    assert message in str(info.value)


def test_config_lists_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        validate_run_config(_config(tmp_path, "method.strengths=[]", "method.site=x", "data.batch_size=0"))
    assert str(info.value).count("\n  - ") == 3


def test_layer_out_of_range() -> None:
    with pytest.raises(GridError, match=r"layers \[4, -1\] are out of range: the model has 4 decoder layers"):
        check_grid([0, 4, -1], [1.0], 4)


def test_absurd_strength() -> None:
    with pytest.raises(GridError, match=r"strengths \[1000000000.0\] exceed 1e\+06 in absolute value"):
        check_grid([0], [1.0, 1e9], 4)


def test_site_missing_in_family() -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = GPTNeoXForCausalLM(config)
    with pytest.raises(LayerLookupError) as info:
        find_site_module(model, 0, "post_attn_norm")
    assert "residual" in str(info.value)


# ---------------------------------------------------------------------------
# Prompts, tokenizers and precision


def _long_item(words: int) -> MCItem:
    context = " ".join(["the quick brown fox jumps over the lazy dog"] * words)
    return MCItem(id="long", question="Which is right?", choices=("yes", "no", "maybe"), target=1, context=context)


def test_long_prompt_keeps_choices_and_cue() -> None:
    tokenizer = tiny_tokenizer()
    item = _long_item(40)
    builder = PromptBuilder(PromptFormat(), tokenizer, context_length=60)
    text = builder.prompt(item)
    assert len(tokenizer(text)["input_ids"]) <= 60
    assert text.startswith("...")
    assert text.endswith("A: yes\nB: no\nC: maybe\nRespond with a single letter.\nAnswer:")
    assert "Which is right?" in text  # the end of the question block is kept
    assert builder.truncated == {"long"}


def test_long_answer_text_keeps_answer() -> None:
    tokenizer = tiny_tokenizer()
    builder = PromptBuilder(PromptFormat(), tokenizer, context_length=30)
    text = builder.answer(_long_item(40), 2)
    assert len(tokenizer(text)["input_ids"]) <= 30
    assert text.endswith("Answer: maybe")


def test_short_prompt_is_unchanged() -> None:
    tokenizer = tiny_tokenizer()
    item = make_items(1)[0]
    assert PromptBuilder(PromptFormat(), tokenizer, context_length=256).prompt(item) == render_prompt(
        item, PromptFormat()
    )


def test_choices_alone_too_long() -> None:
    item = MCItem(id="wide", question="Q?", choices=("the quick brown fox " * 20, "no"), target=0)
    builder = PromptBuilder(PromptFormat(), tiny_tokenizer(), context_length=40)
    with pytest.raises(PromptTooLongError, match=r"item 'wide': even with its question and context cut"):
        builder.prompt(item)


def test_prompt_max_tokens_below_context() -> None:
    builder = PromptBuilder(PromptFormat(max_tokens=50), tiny_tokenizer(), context_length=256)
    assert builder.token_limit == 50


def _scores(tokenizer: object, model: torch.nn.Module, items: list[MCItem]) -> torch.Tensor:
    builder = PromptBuilder(PromptFormat(), tokenizer)
    letters = letter_token_ids(tokenizer, 3)
    return forward_letter_scores(model, builder.encode_prompts(items), letters, [3] * len(items))


def test_tokenizer_without_pad_token() -> None:
    model, items = tiny_llama(), make_items(6)
    reference = _scores(tiny_tokenizer(), model, items)
    no_pad = tiny_tokenizer()
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    assert torch.allclose(_scores(no_pad, model, items), reference, atol=1e-5)


def test_right_padding_tokenizer() -> None:
    model, items = tiny_llama(), make_items(6)
    left = _scores(tiny_tokenizer("left"), model, items)
    right = _scores(tiny_tokenizer("right"), model, items)
    assert torch.allclose(left, right, atol=1e-5)


def test_fp16_overflowing_strength_stays_finite() -> None:
    model = tiny_llama().half()
    ids = torch.tensor([tiny_tokenizer().encode("the quick brown fox Answer:")])
    for strength in (1e5, 1e9, 1e30):
        with add_at_site(model, 1, "residual", torch.full((32,), strength)):
            logits = model(ids).logits
        assert torch.isfinite(logits).all(), strength


# ---------------------------------------------------------------------------
# Vector files


def _vector(hidden: int = 32, model: str = "tiny") -> SteeringVector:
    return SteeringVector(torch.arange(hidden, dtype=torch.float32), layer=1, metadata={"model_name": model})


def test_vector_for_other_hidden_size(tmp_path: Path) -> None:
    path = _vector(64).save(tmp_path / "v")
    with pytest.raises(VectorFileError, match=r"has hidden size 64 but the model has 32"):
        SteeringVector.load(path, expected_hidden_size=32)


def test_vector_for_other_model(tmp_path: Path) -> None:
    path = _vector(model="llama-8b").save(tmp_path / "v")
    with pytest.raises(VectorFileError, match=r"fitted on model 'llama-8b', not 'tiny'; use a vector fitted on this"):
        SteeringVector.load(path, expected_model="tiny")


def test_vector_applied_to_wrong_model_size() -> None:
    with (
        pytest.raises(UserError, match=r"the last dimension must be 32, the model's hidden size"),
        _vector(64).apply(tiny_llama()),
    ):
        pass


class _WritesMarker:
    """Unpickling this object would run ``Path.write_text`` on the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.write_text, (self.marker, "unpickled"))


def test_pickle_vector_file_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "v.safetensors"
    path.write_bytes(pickle.dumps({"vector": _WritesMarker(marker)}))
    with pytest.raises(VectorFileError, match=r"looks like a pickle or torch.save archive"):
        SteeringVector.load(path)
    assert not marker.exists()


def test_torch_save_vector_file_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "v.safetensors"
    torch.save({"vector": torch.ones(3), "x": _WritesMarker(marker)}, path)
    with pytest.raises(VectorFileError, match=r"looks like a pickle or torch.save archive"):
        SteeringVector.load(path)
    assert not marker.exists()


def test_pt_import_with_code_is_rejected(tmp_path: Path) -> None:
    from pas.steering.interop import load_official_pas_vector, load_torch_vectors

    marker = tmp_path / "marker"
    path = tmp_path / "pasf_layer3_strength4.pt"
    torch.save({"x": _WritesMarker(marker)}, path)
    with pytest.raises(VectorFileError, match=r"cannot be loaded with torch.load\(weights_only=True\)"):
        load_torch_vectors(path, layer=3)
    with pytest.raises(VectorFileError):
        load_official_pas_vector(path)
    assert not marker.exists()


def test_corrupted_safetensors(tmp_path: Path) -> None:
    path = _vector().save(tmp_path / "v")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(VectorFileError, match=r"v\.safetensors is not a valid PAS vector file") as info:
        SteeringVector.load(path)
    assert "SteeringVector.save" in str(info.value)


def test_safetensors_of_other_content(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.ones(2)}, str(path))
    with pytest.raises(VectorFileError, match=r"other\.safetensors is not a valid PAS vector file"):
        SteeringVector.load(path)


def test_header_length_byte_0x80_still_loads(tmp_path: Path) -> None:
    # A valid file whose little-endian header length has low byte 0x80, like a pickle's first byte.
    for pad in range(300):
        vector = _vector()
        vector.metadata["pad"] = "x" * pad
        path = vector.save(tmp_path / "v")
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length with low byte 0x80")
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    loaded = SteeringVector.load(path, expected_hidden_size=32)
    assert torch.equal(loaded.vector, vector.vector)


# ---------------------------------------------------------------------------
# Models and output folders


def _model_with_custom_code(folder: Path, marker: Path, model_type: str) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\nclass CustomConfig(LlamaConfig):\n    model_type = 'custom'\n"
    )
    return folder


def test_remote_code_not_run_for_unknown_type(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = _model_with_custom_code(_save_model(tmp_path / "model"), marker, "custom")
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()


def test_remote_code_ignored_for_known_type(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = _model_with_custom_code(_save_model(tmp_path / "model"), marker, "llama")
    loaded = load_model(str(folder), device="cpu")
    assert type(loaded.model.config).__name__ == "LlamaConfig"  # the built-in class, not the folder's code
    assert not marker.exists()


def test_output_folder_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OutputDirError, match=r"cannot write to the output folder .*taken/run") as info:
        prepare_output_dir(blocker / "run")
    assert "hydra.run.dir=" in str(info.value)


def test_output_folder_without_write_permission(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write to read-only folders; the file-in-the-way case covers this path")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputDirError, match="Permission denied"):
            prepare_output_dir(folder)
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------
# Whole runs: all right or all wrong, skipped rows, command-line errors


@pytest.fixture(scope="module")
def always_a_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model(tmp_path_factory.mktemp("always-a"), zero_final_norm=True)


def test_all_train_answers_right(always_a_model: Path, tmp_path: Path) -> None:
    task = _write_task(tmp_path / "items.jsonl", 20, target=0)
    with pytest.raises(UserError) as info:
        run(_compose(_overrides(always_a_model, task, tmp_path / "out", "data.shuffle_choices=false")))
    message = str(info.value)
    assert "cannot build pasf (12 positive, 0 negative texts)" in message
    assert "ipas_wrong_only (0 positive, 0 negative texts)" in message
    assert "answered 12 of 12 train items correctly" in message
    assert "these can be built" not in message


def test_all_train_answers_wrong(always_a_model: Path, tmp_path: Path) -> None:
    task = _write_task(tmp_path / "items.jsonl", 20, target=1)
    with pytest.raises(UserError) as info:
        run(_compose(_overrides(always_a_model, task, tmp_path / "out", "data.shuffle_choices=false")))
    message = str(info.value)
    assert "cannot build pasf (0 positive, 12 negative texts), ipas_all (0 positive, 12 negative texts)" in message
    assert "set method.variants=['ipas_wrong_only'] (these can be built)" in message
    results = run(
        _compose(
            _overrides(
                always_a_model,
                task,
                tmp_path / "wrong-only",
                "data.shuffle_choices=false",
                "method.variants=[ipas_wrong_only]",
            )
        )
    )
    assert results["methods"]["ipas_wrong_only"]["train_counts"] == {"positive": 12, "negative": 12}


def test_skipped_rows_in_results(tmp_path: Path) -> None:
    model = _save_model(tmp_path / "model")
    task = _write_task(tmp_path / "items.jsonl", 30)
    task.write_text(task.read_text() + '{"id": "broken", "question": \n' + json.dumps(_row(99))[:20] + "\n")
    overrides = _overrides(model, task, tmp_path / "out", "data.on_error=skip")
    results = run(_compose(overrides))
    assert results["data"] == {"on_error": "skip", "skipped_rows": 2}
    assert results["splits"] == {"train": 18, "val": 6, "test": 6}
    with pytest.raises(DataError, match=r"items\.jsonl, line 31: invalid JSON"):
        run(_compose(_overrides(model, task, tmp_path / "raise")))


def test_cli_config_typo_gets_hint(tmp_path: Path) -> None:
    result = _cli(["method.strenghts=[1,2]"], tmp_path)
    assert result.returncode == 1
    assert "Key 'strenghts' is not in struct" in _output(result)  # Hydra's own error
    assert "Hint: 'method.strenghts' is not a key of this config; did you mean 'method.strengths'" in _output(result)


def test_cli_group_option_typo_gets_hint(tmp_path: Path) -> None:
    result = _cli(["task=bbq_agee"], tmp_path)
    assert result.returncode == 1
    assert "Could not find 'task/bbq_agee'" in _output(result)
    assert "Hint: there is no task named 'bbq_agee'; did you mean 'bbq_age'" in _output(result)


def test_cli_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("file")
    model = _save_model(tmp_path / "model")
    task = _write_task(tmp_path / "items.jsonl", 20)
    args = [a for a in _overrides(model, task, tmp_path / "x") if not a.startswith("output_dir=")]
    result = _cli([*args, f"output_dir={tmp_path / 'taken' / 'run'}"], tmp_path)
    assert result.returncode == 1
    assert "cannot write to the output folder" in _output(result)
    assert "Traceback" not in _output(result)


def test_config_hint_ignores_other_errors() -> None:
    from pas.cli import config_hint

    assert config_hint("Error merging override seed=abc\nValue 'abc' could not be converted\nfull_key: seed") is None


def test_datamodule_reports_skips(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [_row(i) for i in range(10)] + ["[1, 2]"])
    dm = PASDataModule(lambda: _load(path), "t", 0, None, (0.6, 0.2, 0.2), 4, on_error="skip")
    dm.setup()
    assert dm.skipped_rows == 1
    assert sum(dm.splits.sizes().values()) == 10


def test_model_from_missing_folder_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model folder not found: .*absent"):
        load_model(str(tmp_path / "absent"))


def test_fp32_huge_strength_finite() -> None:
    # float32 with the largest accepted strength: the result is finite and a letter is predicted.
    model = tiny_llama()
    tokenizer = tiny_tokenizer()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, name="tiny", revision=None)
    items = make_items(4)
    vector = SteeringVector(torch.ones(32) / math.sqrt(32), layer=1)
    import pas

    with vector.apply(loaded, strength=1e6):
        predictions = pas.predict(loaded, items)
    assert all(0 <= p < 3 for p in predictions.pred)


def test_resolved_config_has_safe_defaults(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert cfg.model.load.trust_remote_code is False
    assert cfg.data.on_error == "raise"
    assert cfg.resume is False
    assert OmegaConf.select(cfg, "prompt.max_tokens") is None


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                found.append((func.id, node))
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                found.append((f"{func.value.id}.{func.attr}", node))
    return found


def test_package_has_no_unsafe_loading() -> None:
    forbidden = {"eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "marshal.loads"}
    package = Path(__file__).resolve().parents[1] / "pas"
    torch_loads = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, call in _calls(tree):
            assert name not in forbidden, f"{path}:{call.lineno} calls {name}"
            if name == "torch.load":
                weights_only = [k for k in call.keywords if k.arg == "weights_only"]
                assert weights_only, f"{path}:{call.lineno} calls torch.load without weights_only=True"
                assert isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value is True
                torch_loads.append(f"{path.name}:{call.lineno}")
            for keyword in call.keywords:
                if keyword.arg == "trust_remote_code":
                    assert not (isinstance(keyword.value, ast.Constant) and keyword.value.value is True), (
                        f"{path}:{call.lineno} turns trust_remote_code on"
                    )
    assert torch_loads, "the .pt import through torch.load(weights_only=True) was not found"
