from collections.abc import Callable
from typing import Any

ActionScope: type[Any]

def setup(
    current_scope: Any,
    usage_error: type[BaseException],
    internal_error: Callable[[str, BaseException | None], None],
    exception_message: Callable[[BaseException | None], str],
    live_scope: Callable[[Any], Any],
    restore_foreign: Callable[[Any, Any], None],
    format_id: Callable[[Any], str],
    doc: str | None,
    /,
) -> None: ...
def next_id() -> int: ...
def track_context_method(cls: type[Any], /) -> Any: ...
def encode_action(
    scope: Any, ended: bool, offset_ns: int, prefix: str, fields: str, /
) -> bytes | None: ...
def setup_encoder(
    dumps: Callable[..., bytes], default: Callable[[Any], Any], option: int, payload_max: int, /
) -> None: ...
