"""Behavioural tests for the knowledge-graph importer (text triples -> parquet edges + config)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tml.core.config import load_config
from tml.core.files import OutputExistsError
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.operators import OPERATORS
from tml.projects.twhin.tools import import_kg as import_kg_module
from tml.projects.twhin.tools.import_kg import (
    KgImportError,
    default_training_settings,
    import_kg,
    reading,
    writing,
)

REPO = Path(__file__).resolve().parents[2]
KINSHIPS = REPO / "datasets" / "kinships"
SPLITS = ("train", "valid", "test")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_edges(out: Path, split: str) -> list[tuple[int, int, int]]:
    files = sorted((out / split).glob("part-*.parquet"))
    assert files, f"no parquet files in {out / split}"
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.schema == import_kg_module.EDGE_SCHEMA
    return list(zip(*(table[c].to_pylist() for c in ("lhs", "rel", "rhs")), strict=True))


def read_vocab(out: Path, table: str) -> list[str]:
    vocab = pq.read_table(out / "vocab" / f"{table}.parquet")
    assert vocab["id"].to_pylist() == list(range(len(vocab))), "ids must be dense, in order"
    return vocab["name"].to_pylist()


def read_relations(out: Path) -> list[dict[str, Any]]:
    relations = pq.read_table(out / "relations.parquet").to_pylist()
    assert [r["id"] for r in relations] == list(range(len(relations)))
    return relations


def decode(out: Path, split: str) -> list[tuple[str, str, str]]:
    """Parquet edges back to names through relations.parquet and the vocab files."""
    relations = read_relations(out)
    vocabs = {r[side]: read_vocab(out, r[side]) for r in relations for side in ("lhs", "rhs")}
    return [
        (
            vocabs[relations[rel]["lhs"]][lhs],
            relations[rel]["name"],
            vocabs[relations[rel]["rhs"]][rhs],
        )
        for lhs, rel, rhs in read_edges(out, split)
    ]


def tsv_rows(path: Path) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        return [tuple(row) for row in csv.reader(f, delimiter="\t")]  # type: ignore[misc]


@pytest.fixture
def small_graph(tmp_path: Path) -> dict[str, Path]:
    """Hand-made splits whose ids can be worked out by reading them."""
    return {
        "train": write_lines(tmp_path / "train.tsv", ["b\tlikes\ta", "a\tknows\tc", "c\tlikes\tb"]),
        "valid": write_lines(tmp_path / "valid.tsv", ["d\tloves\ta", "c\tknows\tb"]),
        "test": write_lines(tmp_path / "test.tsv", ["e\tknows\td", "a\tloves\te"]),
    }


@pytest.fixture(scope="module")
def kinships(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """datasets/kinships imported once with the defaults."""
    out = tmp_path_factory.mktemp("kinships") / "kinships"
    import_kg(*(KINSHIPS / f"{split}.tsv" for split in SPLITS), out=out)
    return out


# -- ids ----------------------------------------------------------------------------------------


def test_ids_are_dense_and_follow_first_appearance(small_graph: dict[str, Path], tmp_path: Path):
    out = tmp_path / "out"
    summary = import_kg(small_graph["train"], small_graph["valid"], small_graph["test"], out=out)

    # Over train, then valid, then test; within a row the head comes before the tail.
    assert read_vocab(out, "entity") == ["b", "a", "c", "d", "e"]
    assert [r["name"] for r in read_relations(out)] == ["likes", "knows", "loves"]
    assert read_edges(out, "train") == [(0, 0, 1), (1, 1, 2), (2, 0, 0)]
    assert summary["tables"] == {"entity": 5}
    assert summary["relations"] == 3
    assert summary["edges"] == {"train": 3, "valid": 2, "test": 2}


def test_same_name_maps_to_same_id_across_splits(small_graph: dict[str, Path], tmp_path: Path):
    out = tmp_path / "out"
    import_kg(small_graph["train"], small_graph["valid"], small_graph["test"], out=out)

    # valid "c knows b" reuses train's ids for c, knows and b; "a" in valid and test is id 1.
    assert read_edges(out, "valid") == [(3, 2, 1), (2, 1, 0)]
    assert read_edges(out, "test") == [(4, 1, 3), (1, 2, 4)]


def test_relation_counts_are_train_edges_only(small_graph: dict[str, Path], tmp_path: Path):
    out = tmp_path / "out"
    import_kg(small_graph["train"], small_graph["valid"], small_graph["test"], out=out)

    counts = {r["name"]: r["count"] for r in read_relations(out)}
    assert counts == {"likes": 2, "knows": 1, "loves": 0}


# -- Kinships -----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_kinships_decodes_back_to_the_original_triples(kinships: Path, split: str):
    assert decode(kinships, split) == tsv_rows(KINSHIPS / f"{split}.tsv")


def test_kinships_vocab_holds_every_name_once(kinships: Path):
    entities = read_vocab(kinships, "entity")
    rows = [row for split in SPLITS for row in tsv_rows(KINSHIPS / f"{split}.tsv")]
    assert sorted(entities) == sorted({name for h, _, t in rows for name in (h, t)})
    assert len(entities) == 104
    assert len(read_relations(kinships)) == len({r for _, r, _ in rows}) == 25


def test_kinships_config_validates_with_tables_from_vocab_and_relations_in_id_order(
    kinships: Path,
):
    config = load_config(TwhinConfig, kinships / "config.yaml")

    tables = config.model.embeddings.tables
    assert [(t.name, t.num_embeddings, t.embedding_dim) for t in tables] == [("entity", 104, 64)]
    relations = read_relations(kinships)
    assert [r.name for r in config.model.relations] == [r["name"] for r in relations]
    assert {r.operator for r in config.model.relations} == {"translation"}
    assert config.train_data.data_root == str(kinships / "train")
    assert config.validation_data is not None
    assert config.validation_data.data_root == str(kinships / "valid")
    assert os.path.isabs(config.train_data.data_root)
    expected = default_training_settings(8544, 104)
    assert config.train_data.per_replica_batch_size == expected["per_replica_batch_size"] == 534
    assert config.training.num_epochs == 60
    assert config.training.train_log_every_n == 16  # steps of one epoch on 1 rank
    assert config.test_data is not None
    assert config.test_data.data_root == str(kinships / "test")
    text = (kinships / "config.yaml").read_text()
    assert text.startswith("# Training config for the kinships knowledge graph")
    assert "python -m tml.projects.twhin.import_kg" in text


def test_operator_and_dim_reach_every_relation_and_table(small_graph: dict[str, Path], tmp_path):
    out = tmp_path / "out"
    import_kg(small_graph["train"], out=out, operator="translation", dim=8)

    config = load_config(TwhinConfig, out / "config.yaml")
    assert [t.embedding_dim for t in config.model.embeddings.tables] == [8]
    assert [r.operator for r in config.model.relations] == ["translation"] * 2
    assert config.validation_data is None  # no --valid: nothing to evaluate on
    assert not (out / "valid").exists()


@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_every_registered_operator_gives_a_valid_config(
    small_graph: dict[str, Path], tmp_path, operator
):
    out = tmp_path / "out"
    import_kg(small_graph["train"], out=out, operator=operator, dim=8)
    config = load_config(TwhinConfig, out / "config.yaml")
    assert {r.operator for r in config.model.relations} == {operator}


def test_dim_an_operator_cannot_use_is_refused_before_reading(tmp_path: Path):
    odd = [name for name, op in OPERATORS.items() if op.dimension_problem(7, 7)]
    if not odd:
        pytest.skip("every registered operator accepts any dim")
    with pytest.raises(KgImportError, match=f"--dim 7: .*{odd[0]}"):
        import_kg(tmp_path / "not-read.tsv", out=tmp_path / "out", operator=odd[0], dim=7)


def test_unknown_operator_is_refused_with_the_choices(small_graph: dict[str, Path], tmp_path):
    with pytest.raises(KgImportError, match="unknown operator 'transE'.*translation"):
        import_kg(small_graph["train"], out=tmp_path / "out", operator="transE")
    assert not (tmp_path / "out").exists()


def test_default_training_settings_scale_with_the_graph():
    assert default_training_settings(100, 10)["per_replica_batch_size"] == 64
    small = default_training_settings(8544, 104)
    assert small["per_replica_batch_size"] == 534 and small["num_epochs"] == 60
    assert small["global_negatives"] == 100
    assert default_training_settings(100, 10)["global_negatives"] == 10  # never more than exist
    big = default_training_settings(10_000_000, 1_000_000)
    assert big["per_replica_batch_size"] == 1000 and big["num_epochs"] == 5
    assert big["checkpoint_every_n"] == 10_000 * 10
    assert big["eval_log_every_n"] == 10_000 * 10
    schedule = big["table_optimizer"]["learning_rate"]["linear_ramp_to_cosine"]
    assert schedule["final_num_steps"] == big["num_train_steps"] == 10_000 * 5
    assert big["translation_optimizer"] == big["table_optimizer"]


def test_reciprocal_relations_default_to_on_except_for_translation():
    assert not default_training_settings(100, 10)["reciprocal_relations"]
    assert default_training_settings(100, 10, "diagonal")["reciprocal_relations"]
    assert default_training_settings(100, 10, "complex_diagonal")["reciprocal_relations"]


# -- streaming ----------------------------------------------------------------------------------


def test_tiny_blocks_stream_in_many_chunks_with_identical_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    files = [KINSHIPS / f"{split}.tsv" for split in SPLITS]
    whole = tmp_path / "whole" / "kg"
    import_kg(*files, out=whole)

    blocks = 0
    real_read_rows = reading.read_rows

    def counting_read_rows(*args: Any, **kwargs: Any) -> Any:
        nonlocal blocks
        for rows in real_read_rows(*args, **kwargs):
            blocks += 1
            yield rows

    monkeypatch.setattr(reading, "read_rows", counting_read_rows)
    chunked = tmp_path / "chunked" / "kg"
    import_kg(*files, out=chunked, block_size=512)

    assert blocks > 300
    names = sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(chunked)) for p in chunked.rglob("*") if p.is_file())
    for name in names:
        if name == "config.yaml":  # names its own directory
            expected = (whole / name).read_text().replace(str(whole), str(chunked))
            assert (chunked / name).read_text() == expected
        else:
            assert (chunked / name).read_bytes() == (whole / name).read_bytes(), name


def test_large_splits_roll_over_row_groups_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(writing, "ROW_GROUP_SIZE", 1000)
    monkeypatch.setattr(writing, "ROWS_PER_FILE", 3000)
    out = tmp_path / "out"
    import_kg(KINSHIPS / "train.tsv", out=out, block_size=4096)

    files = sorted((out / "train").glob("part-*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [3000, 3000, 2544]
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 3
    assert decode(out, "train") == tsv_rows(KINSHIPS / "train.tsv")


# -- types --------------------------------------------------------------------------------------


@pytest.fixture
def typed_graph(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_lines(
            tmp_path / "train.tsv",
            ["ann\tfollows\tbob", "ann\tfaves\tt1", "bob\tfaves\tt2", "bob\tclicks\tacme"],
        ),
        "valid": write_lines(tmp_path / "valid.tsv", ["cat\tfaves\tt1"]),
        "types": write_lines(
            tmp_path / "types.tsv",
            [
                "t1\ttweet",
                "ann\tuser",
                "bob\tuser",
                "t2\ttweet",
                "acme\tadvertiser",
                "cat\tuser",
                "unused\tpage",
            ],
        ),  # fmt: skip
    }


def test_types_give_one_table_per_type_with_dense_ids(typed_graph: dict[str, Path], tmp_path):
    out = tmp_path / "out"
    summary = import_kg(
        typed_graph["train"], typed_graph["valid"], out=out, types=typed_graph["types"]
    )

    # Tables in order of first appearance in the edges; a type without edges gets no table.
    assert summary["tables"] == {"user": 3, "tweet": 2, "advertiser": 1}
    assert read_vocab(out, "user") == ["ann", "bob", "cat"]
    assert read_vocab(out, "tweet") == ["t1", "t2"]
    assert read_vocab(out, "advertiser") == ["acme"]
    assert read_edges(out, "train") == [(0, 0, 1), (0, 1, 0), (1, 1, 1), (1, 2, 0)]
    assert decode(out, "valid") == [("cat", "faves", "t1")]


def test_types_give_each_relation_its_lhs_and_rhs_tables(typed_graph: dict[str, Path], tmp_path):
    out = tmp_path / "out"
    import_kg(typed_graph["train"], typed_graph["valid"], out=out, types=typed_graph["types"])

    sides = [(r["name"], r["lhs"], r["rhs"]) for r in read_relations(out)]
    assert sides == [
        ("follows", "user", "user"),
        ("faves", "user", "tweet"),
        ("clicks", "user", "advertiser"),
    ]
    config = load_config(TwhinConfig, out / "config.yaml")
    assert [(r.name, r.lhs, r.rhs) for r in config.model.relations] == sides
    assert [(t.name, t.num_embeddings) for t in config.model.embeddings.tables] == [
        ("user", 3),
        ("tweet", 2),
        ("advertiser", 1),
    ]
    assert "&id" not in (out / "config.yaml").read_text()  # shared blocks written out in full


def test_relation_joining_other_types_names_file_and_line(typed_graph: dict[str, Path], tmp_path):
    valid = write_lines(tmp_path / "bad_valid.tsv", ["cat\tfaves\tt1", "t2\tfaves\tann"])
    with pytest.raises(KgImportError) as error:
        import_kg(typed_graph["train"], valid, out=tmp_path / "out", types=typed_graph["types"])

    message = str(error.value)
    assert f"{valid}: line 2: relation 'faves' joins tweet -> user" in message
    assert f"user -> tweet at {typed_graph['train']}: line 2" in message
    assert not (tmp_path / "out").exists()


def test_entity_without_type_names_file_and_line(typed_graph: dict[str, Path], tmp_path):
    valid = write_lines(tmp_path / "bad_valid.tsv", ["cat\tfaves\tt1", "cat\tfollows\tdan"])
    with pytest.raises(KgImportError, match=rf"{valid}: line 2: entity 'dan' has no type in "):
        import_kg(typed_graph["train"], valid, out=tmp_path / "out", types=typed_graph["types"])


def test_first_typing_problem_in_a_block_is_reported(typed_graph: dict[str, Path], tmp_path):
    valid = write_lines(tmp_path / "bad_valid.tsv", ["t1\tfaves\tann", "cat\tfollows\tdan"])
    with pytest.raises(KgImportError, match=rf"{valid}: line 1: relation 'faves' joins tweet"):
        import_kg(typed_graph["train"], valid, out=tmp_path / "out", types=typed_graph["types"])


def test_name_with_two_types_names_types_file_and_line(typed_graph: dict[str, Path], tmp_path):
    types = write_lines(tmp_path / "types2.tsv", ["ann\tuser", "bob\tuser", "ann\ttweet"])
    with pytest.raises(KgImportError, match=rf"{types}: line 3: 'ann' has type 'tweet'"):
        import_kg(typed_graph["train"], out=tmp_path / "out", types=types)


def test_type_that_cannot_name_a_file_is_refused(typed_graph: dict[str, Path], tmp_path):
    types = write_lines(tmp_path / "types2.tsv", ["ann\tuser", "bob\t../user"])
    with pytest.raises(KgImportError, match=rf"{types}: line 2: type '../user' cannot name"):
        import_kg(typed_graph["train"], out=tmp_path / "out", types=types)


# -- bad rows -----------------------------------------------------------------------------------

GOOD = ["a\tr\tb", "b\tr\tc", "c\ts\ta"]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("d\tr", "expected 3 fields (head, relation, tail), got 2: 'd\\tr'"),
        ("d\tr\te\tf", "expected 3 fields (head, relation, tail), got 4"),
        ("d", "expected 3 fields (head, relation, tail), got 1"),
        ("d\t\te", "empty relation field"),
        ("\tr\te", "empty head field"),
        ("d\tr\t  ", "empty tail field"),
        ("", "empty head field"),
    ],
    ids=["missing-field", "extra-column", "one-field", "empty-relation", "empty-head",
         "blank-tail", "blank-line"],
)  # fmt: skip
@pytest.mark.parametrize("block_size", [import_kg_module.DEFAULT_BLOCK_SIZE, 16])
def test_bad_row_is_an_error_naming_file_and_line(
    tmp_path: Path, bad_line: str, problem: str, block_size: int
):
    train = write_lines(tmp_path / "train.tsv", GOOD)
    valid = write_lines(tmp_path / "valid.tsv", GOOD + GOOD + [bad_line] + GOOD)
    with pytest.raises(KgImportError) as error:
        import_kg(train, valid, out=tmp_path / "out", block_size=block_size)

    assert str(error.value).startswith(f"{valid}: line 7: ")
    assert problem in str(error.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("block_size", [import_kg_module.DEFAULT_BLOCK_SIZE, 16])
def test_the_first_bad_line_is_reported_whatever_its_kind(tmp_path: Path, block_size: int):
    # pyarrow rejects the short row while parsing; the empty field above it must still win.
    train = write_lines(tmp_path / "train.tsv", [*GOOD, "x\t\ty", *GOOD, "x\tr"])
    with pytest.raises(KgImportError, match=rf"{train}: line 4: empty relation field"):
        import_kg(train, out=tmp_path / "out", block_size=block_size)


def test_line_longer_than_the_block_size_is_an_error(tmp_path: Path):
    train = write_lines(tmp_path / "train.tsv", [*GOOD, "a" * 300 + "\tr\tb"])
    with pytest.raises(
        KgImportError, match=rf"{train}: a line after line 3 is too long for the block size"
    ):
        import_kg(train, out=tmp_path / "out", block_size=64)


def test_header_line_is_skipped_and_counted_in_line_numbers(tmp_path: Path):
    train = write_lines(tmp_path / "train.tsv", ["head\trelation\ttail", *GOOD, "x\tr"])
    with pytest.raises(KgImportError, match=rf"{train}: line 5: expected 3 fields"):
        import_kg(train, out=tmp_path / "out", header=True)

    write_lines(train, ["head\trelation\ttail", *GOOD])
    import_kg(train, out=tmp_path / "out", header=True)
    assert read_vocab(tmp_path / "out", "entity") == ["a", "b", "c"]


def test_comma_delimited_files_allow_quoted_names(tmp_path: Path):
    train = write_lines(tmp_path / "train.csv", ['"Smith, J",knows,"O""Brien"', "x,knows,y"])
    out = tmp_path / "out"
    import_kg(train, out=out, delimiter=",")
    assert decode(out, "train") == [("Smith, J", "knows", 'O"Brien'), ("x", "knows", "y")]


def test_quotes_in_tab_separated_names_are_kept(tmp_path: Path):
    train = write_lines(tmp_path / "train.tsv", ['"quoted"\tr\tb', "it's\tr\tb"])
    out = tmp_path / "out"
    import_kg(train, out=out)
    assert read_vocab(out, "entity") == ['"quoted"', "b", "it's"]


def test_empty_train_file_is_an_error(tmp_path: Path):
    train = tmp_path / "train.tsv"
    train.write_text("")
    with pytest.raises(KgImportError, match="no edges to train on"):
        import_kg(train, out=tmp_path / "out")


def test_missing_input_file_is_an_error(tmp_path: Path):
    with pytest.raises(KgImportError, match="no such file"):
        import_kg(tmp_path / "nope.tsv", out=tmp_path / "out")


# -- output directory ---------------------------------------------------------------------------


def test_existing_output_dir_is_refused_and_untouched(small_graph: dict[str, Path], tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    with pytest.raises(OutputExistsError, match="--overwrite"):
        import_kg(small_graph["train"], out=out)

    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"


def test_overwrite_replaces_the_output_dir(small_graph: dict[str, Path], tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")

    import_kg(small_graph["train"], out=out, overwrite=True)

    assert not (out / "stale.txt").exists()
    assert read_vocab(out, "entity") == ["b", "a", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", "train.tsv", "valid.tsv", "test.tsv"]
    )


# -- CLI ----------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.import_kg", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip


def test_cli_exits_0_and_prints_the_summary(small_graph: dict[str, Path], tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli(
        "--train", str(small_graph["train"]), "--valid", str(small_graph["valid"]),
        "--test", str(small_graph["test"]), "--out", str(out), "--dim", "16",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == (
        f"imported {out}: entities: entity 5; relations: 3; "
        f"edges: train 3, valid 2, test 2; config: {out / 'config.yaml'}"
    )
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["embeddings"]["tables"][0]["embedding_dim"] == 16


def test_cli_exits_2_with_one_error_line_on_a_bad_row(tmp_path: Path):
    train = write_lines(tmp_path / "train.tsv", [*GOOD, "a\tr\tb\tc"])
    out = tmp_path / "out"
    result = run_cli("--train", str(train), "--out", str(out))

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {train}: line 4: expected 3 fields (head, relation, tail), got 4: 'a\\tr\\tb\\tc'"
    ]
    assert not out.exists()
