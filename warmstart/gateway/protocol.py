"""OpenAI request bodies as warmstart accepts them: strictly typed, with warmstart's `keep_alive` extension."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    # extra fields pass through to the engine; types are checked strictly ("5" is not an integer)
    model_config = ConfigDict(extra="allow", strict=True)


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _null_name_is_no_name(self) -> ChatMessage:
        # a `"name": null` sent on would fail llama-server's message parsing (an HTTP 500): it names no one
        if self.name is None:
            self.__pydantic_fields_set__.discard("name")
        return self


class _GenerationRequest(_Strict):
    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128,
                          description="Choices to generate; each engine has its own limit (llama.cpp: 16, others: 1).")
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    keep_alive: float | str | None = Field(
        default=None,
        description="warmstart extension (Ollama's semantics): how long the model stays loaded after this "
                    "request, in seconds or as '5m'; 0 unloads at once, negative never unloads.",
    )


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] = Field(description="A string, a one-element array of strings, or token ids.")


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string, an array of strings, token ids, or an array of token id arrays.")
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    keep_alive: float | str | None = Field(default=None, description="As for completions.")
