"""Fixtures for the model server's unit tests: small models trained here, an in-process client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import FAKE_SHA, Client, make_settings
from sklearn.datasets import load_iris, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlmodel_serving.app import create_app
from mlmodel_serving.model import SklearnModel


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="session")
def iris_estimator(iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> LogisticRegression:
    x, y = iris
    return LogisticRegression(max_iter=1000).fit(x, y)


@pytest.fixture(scope="session")
def regressor() -> LinearRegression:
    x, y = make_regression(n_samples=50, n_features=3, random_state=0)
    return LinearRegression().fit(x, y)


@pytest.fixture
def iris_model(iris_estimator: LogisticRegression) -> SklearnModel:
    return SklearnModel(iris_estimator, "iris", "3", FAKE_SHA, load_seconds=0.25)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(iris_model: SklearnModel, registry: CollectorRegistry) -> Iterator[Client]:
    c = Client(create_app(make_settings(), iris_model, registry))
    yield c
    c.close()
