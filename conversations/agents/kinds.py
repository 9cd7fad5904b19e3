"""Agent kinds: how a `request`'s value becomes the boolean `result`.

Each kind parses its JSON configuration (the Agent row's `configuration`, plus the keys a client
may override per connection through `auth.agent.configuration`) into a typed, frozen config, and
evaluates a value against it. Add a kind by writing a class with `name`, `overridable`,
`parse()` and `evaluate()` and listing it in `REGISTRY`.

Patterns use the `regex` package, not `re`: it knows Unicode properties such as
`\\p{Emoji_Presentation}` (the seed's emoji detector is one pattern, `EMOJI_PATTERN`), and it can
stop a runaway match after a time limit, which matters because patterns are written by staff and
may be overridden by clients.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Protocol

import regex

from flows.models import Brand

logger = logging.getLogger(__name__)

# RGI-style emoji: characters shown as emoji by default, any emoji character followed by the
# emoji variation selector (❤️, ©️, keycaps #️⃣), and flag pairs (🇫🇷). Text-style symbols
# without the selector (©, ❤, ☺) are not emoji, as in the seed's emojiRegexRGI().
EMOJI_PATTERN = r"\p{Emoji_Presentation}|\p{Emoji}\uFE0F|\p{Regional_Indicator}{2}"

MAX_PATTERN_CHARS = 1000
MAX_KEYWORDS = 200
MAX_KEYWORD_CHARS = 200
MAX_QUESTION_CHARS = 2000
# A pattern that has not finished after this long is abandoned (catastrophic backtracking).
PATTERN_TIMEOUT_SECONDS = 0.25


class ConfigError(ValueError):
    """A configuration (the agent's own, or a client's override) is not valid for the kind."""


class AgentFailed(Exception):
    """The agent could not produce a result for this value; nothing is stored."""


class Kind(Protocol):
    name: str
    # Keys of the configuration a client may override per connection.
    overridable: ClassVar[frozenset[str]]

    def parse(self, raw: dict[str, Any]) -> Any: ...

    async def evaluate(self, config: Any, value: str, brand: Brand | None) -> bool: ...


# --- small typed readers ----------------------------------------------------------------------


def _str(raw: dict[str, Any], key: str, default: str | None = None, *, limit: int) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"`{key}` must be a string")
    if len(value) > limit:
        raise ConfigError(f"`{key}` is longer than {limit} characters")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"`{key}` must be true or false")
    return value


def _words(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):  # a comma-separated string is friendlier to type in a form
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"`{key}` must be a list of strings")
    words = tuple(item.strip() for item in value if item.strip())
    if len(words) > MAX_KEYWORDS or any(len(word) > MAX_KEYWORD_CHARS for word in words):
        raise ConfigError(f"`{key}`: at most {MAX_KEYWORDS} words of {MAX_KEYWORD_CHARS} characters")
    return words


@lru_cache(maxsize=256)
def _compile(pattern: str, ignore_case: bool) -> regex.Pattern[str]:
    flags = regex.V1 | (regex.IGNORECASE if ignore_case else 0)
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise ConfigError(f"`pattern` is not a valid regular expression: {exc}") from exc


def _search(compiled: regex.Pattern[str], value: str) -> bool:
    try:
        return compiled.search(value, timeout=PATTERN_TIMEOUT_SECONDS) is not None
    except TimeoutError as exc:
        raise AgentFailed("the pattern took too long on this value") from exc


# --- pattern ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatternConfig:
    pattern: str
    ignore_case: bool = False
    negate: bool = False  # result is true when the value does NOT match


class PatternKind:
    """`result` = the value contains a match of `pattern` (or does not, with `negate`)."""

    name = "pattern"
    overridable: ClassVar[frozenset[str]] = frozenset({"pattern", "ignore_case", "negate"})

    def parse(self, raw: dict[str, Any]) -> PatternConfig:
        pattern = _str(raw, "pattern", limit=MAX_PATTERN_CHARS) if "pattern" in raw else ""
        if not pattern:
            raise ConfigError("`pattern` is required")
        config = PatternConfig(pattern, _bool(raw, "ignore_case", False), _bool(raw, "negate", False))
        _compile(config.pattern, config.ignore_case)  # refuse a bad pattern now, not per request
        return config

    async def evaluate(self, config: PatternConfig, value: str, brand: Brand | None) -> bool:
        compiled = _compile(config.pattern, config.ignore_case)
        # In a thread: a slow pattern (up to the time limit) must not stall every other socket.
        return await asyncio.to_thread(_search, compiled, value) != config.negate


# --- keyword ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeywordConfig:
    keywords: tuple[str, ...]
    match: str = "any"  # "any" | "all"
    whole_words: bool = True
    ignore_case: bool = True


def _keyword_pattern(keywords: tuple[str, ...], whole_words: bool) -> str:
    escaped = [regex.escape(word) for word in keywords]
    return "|".join(rf"(?<!\w){word}(?!\w)" if whole_words else word for word in escaped)


def keywords_found(keywords: tuple[str, ...], value: str, *, whole_words: bool, ignore_case: bool) -> set[str]:
    """The keywords (as configured) that occur in `value`."""
    found = set()
    for word in keywords:
        compiled = _compile(_keyword_pattern((word,), whole_words), ignore_case)
        if _search(compiled, value):
            found.add(word)
    return found


class KeywordKind:
    """`result` = the value contains any (or all) of `keywords`."""

    name = "keyword"
    overridable: ClassVar[frozenset[str]] = frozenset({"keywords", "match", "whole_words", "ignore_case"})

    def parse(self, raw: dict[str, Any]) -> KeywordConfig:
        keywords = _words(raw, "keywords")
        if not keywords:
            raise ConfigError("`keywords` needs at least one word")
        match = _str(raw, "match", "any", limit=3)
        if match not in {"any", "all"}:
            raise ConfigError('`match` must be "any" or "all"')
        return KeywordConfig(keywords, match, _bool(raw, "whole_words", True), _bool(raw, "ignore_case", True))

    async def evaluate(self, config: KeywordConfig, value: str, brand: Brand | None) -> bool:
        found = keywords_found(config.keywords, value, whole_words=config.whole_words, ignore_case=config.ignore_case)
        return len(found) == len(config.keywords) if config.match == "all" else bool(found)


# --- LLM classifier ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LLMConfig:
    question: str
    # Used when the brand has no model (the offline provider) or the model fails.
    fallback_keywords: tuple[str, ...] = ()


CLASSIFIER_INSTRUCTIONS = (
    "You are a strict classifier. Read the question and the text, then answer with exactly one word: yes or no."
)


def read_yes_no(answer: str) -> bool | None:
    """True for an answer starting with yes, False for no, None when it is neither."""
    words = regex.findall(r"\p{L}+", answer.lower())
    if not words:
        return None
    if words[0] in {"yes", "ya", "true"}:
        return True
    if words[0] in {"no", "tidak", "false"}:
        return False
    return None


class LLMKind:
    """`result` = the brand's model answers yes to `question` about the value.

    The question is not overridable by clients: it spends the brand's model budget. When the
    brand answers with the offline responder (no model), or the model fails, times out or answers
    neither yes nor no, the result is whether the value contains any of `fallback_keywords`
    (false when there are none).
    """

    name = "llm"
    overridable: ClassVar[frozenset[str]] = frozenset()

    def parse(self, raw: dict[str, Any]) -> LLMConfig:
        question = _str(raw, "question", "", limit=MAX_QUESTION_CHARS).strip()
        if not question:
            raise ConfigError("`question` is required (a yes/no question about the value)")
        return LLMConfig(question, _words(raw, "fallback_keywords"))

    async def evaluate(self, config: LLMConfig, value: str, brand: Brand | None) -> bool:
        answer = await _ask_model(brand, config.question, value) if brand is not None else None
        verdict = read_yes_no(answer) if answer is not None else None
        if verdict is not None:
            return verdict
        return bool(keywords_found(config.fallback_keywords, value, whole_words=True, ignore_case=True))


async def _ask_model(brand: Brand, question: str, value: str) -> str | None:
    """The model's answer, or None when the brand has no model, has spent today's budget, or
    the model failed. What it streamed counts against the brand's daily budget, as answers do."""
    if brand.llm_provider == Brand.Provider.OFFLINE:
        return None
    from django.conf import settings

    from conversations.generation.base import GenerationRequest, ProviderError
    from conversations.generation.budget import budget_spent, record_usage
    from conversations.protocols.common import db_async

    if await db_async(budget_spent)(brand):
        logger.info("agents: brand %s has spent today's model budget; LLM agent uses its fallback", brand.slug)
        return None

    try:
        from conversations.generation.providers import provider_for
    except ImportError:  # the providers module is not there: behave as offline
        logger.warning("agents: no conversations.generation.providers; LLM agent uses its fallback")
        return None
    request = GenerationRequest(
        brand_name=brand.name,
        user_text=f"Question: {question}\n\nText:\n{value}\n\nAnswer yes or no.",
        system_prompt=CLASSIFIER_INSTRUCTIONS,
        options={"max_tokens": 3, "temperature": 0},
    )
    pieces: list[str] = []

    async def collect() -> None:
        async for piece in provider_for(brand).stream(request):
            pieces.append(piece)
            if len("".join(pieces)) > 40:  # the first word is all we read
                break

    try:
        await asyncio.wait_for(collect(), timeout=settings.LLM_TIMEOUT_SECONDS)
    except (ProviderError, TimeoutError, OSError) as exc:
        logger.warning("agents: the model of brand %s failed: %s", brand.slug, exc)
        return None
    finally:
        await db_async(record_usage)(brand.pk, len(pieces))
    return "".join(pieces)


REGISTRY: dict[str, Kind] = {kind.name: kind for kind in (PatternKind(), KeywordKind(), LLMKind())}


def kind_for(name: str) -> Kind:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown agent kind {name!r}") from None


def effective_config(kind_name: str, configuration: Any, overrides: Any = None) -> Any:
    """The typed configuration of an agent, with a client's overrides of documented keys.

    Keys a kind does not list as overridable are ignored (clients send their own settings too);
    an override of a documented key with a bad value raises ConfigError.
    """
    kind = kind_for(kind_name)
    raw = dict(configuration) if isinstance(configuration, dict) else {}
    if isinstance(overrides, dict):
        raw.update({key: value for key, value in overrides.items() if key in kind.overridable})
    return kind.parse(raw)
