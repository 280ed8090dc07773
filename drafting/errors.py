"""Errors the engine raises for bad requests or unusable models; each message names the problem."""


class EngineError(Exception):
    """A model or configuration the engine cannot run."""


class ContextLengthError(ValueError):
    """The prompt plus the requested new tokens do not fit the model's context."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int, max_context: int):
        self.prompt_tokens, self.max_new_tokens, self.max_context = prompt_tokens, max_new_tokens, max_context
        super().__init__(
            f"prompt ({prompt_tokens} tokens) + max_tokens ({max_new_tokens}) must be <= the context length "
            f"{max_context}, got {prompt_tokens + max_new_tokens}"
        )
