"""The service's response bodies as pydantic models: they make its OpenAPI document."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str


class Embedding(BaseModel):
    filename: str | None
    key: str = Field(description="SHA-256 of the uploaded bytes: the key featx stores this image's vector under")
    vector: list[float]


class EmbedResponse(BaseModel):
    backbone: str
    store_key: str = Field(description="the backbone configuration's key: vectors are comparable within one key")
    dim: int
    results: list[Embedding]


class ClassScore(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    filename: str | None
    key: str
    predictions: list[ClassScore]


class PredictResponse(BaseModel):
    head: str
    dataset: str
    results: list[Prediction]


class Neighbour(BaseModel):
    rank: int
    key: str
    path: str
    label: str | None
    split: str | None = None
    similarity: float = Field(description="cosine similarity to the query")
    score: float = Field(description="the same as similarity: its old name, removed in the next release")


class QueryResult(BaseModel):
    query: str = Field(description="the uploaded file's name, or id:KEY for a stored sample (as featx search takes it)")
    results: list[Neighbour]


class SearchResponse(BaseModel):
    dataset: str
    exact: bool = Field(description="true when the dataset has no saved index and was searched exhaustively")
    results: list[QueryResult]


ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 422)}
