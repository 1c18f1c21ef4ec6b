"""ComfyUI's classic node cache (comfy_execution/caching.py), reduced to what matters here.

Its observable quirk is the point: an identical re-queued prompt executes nothing and
replays the *previous* outputs (file names) from this cache.
"""

from __future__ import annotations

from typing import Any

from .validation import is_link


class _Unhashable:
    """A key part that never equals anything (ComfyUI's Unhashable / NaN IS_CHANGED)."""


def _hashable(obj: Any) -> Any:
    if isinstance(obj, (int, float, str, bool, type(None))):
        return obj
    if isinstance(obj, dict):
        return ("dict", tuple(sorted(((str(k), _hashable(v)) for k, v in obj.items()), key=lambda kv: kv[0])))
    if isinstance(obj, (list, tuple)):
        return ("list", tuple(_hashable(v) for v in obj))
    return _Unhashable()


class NodeCache:
    """ComfyUI's classic cache: values keyed by input signature, pruned to the current prompt.

    A node's signature is its class_type, its IS_CHANGED value and *all* its inputs (also
    keys the node does not define), with links replaced by the position of the ancestor in
    an ordered ancestry, plus the signatures of those ancestors. ``set_prompt`` then drops
    every entry that no node of the new prompt maps to, so only the latest prompt's outputs
    survive. With ``by_id`` the key is (node_id, class_type), used for node objects.
    """

    def __init__(self, by_id: bool = False) -> None:
        self.by_id = by_id
        self.cache: dict[Any, Any] = {}
        self.keys: dict[str, Any] = {}

    def set_prompt(self, prompt: dict[str, Any], is_changed: dict[str, Any], id_nodes: set[str]) -> None:
        self.keys = {}
        for node_id in prompt:
            if self.by_id:
                self.keys[node_id] = (node_id, prompt[node_id]["class_type"])
            else:
                self.keys[node_id] = self._signature(prompt, node_id, is_changed, id_nodes)
        used = set(self.keys.values())
        for key in [k for k in self.cache if k not in used]:
            del self.cache[key]

    def _signature(self, prompt: dict[str, Any], node_id: str, is_changed: dict[str, Any],
                   id_nodes: set[str]) -> Any:
        ancestors: list[str] = []
        order: dict[str, int] = {}

        def walk(nid: str) -> None:
            if nid not in prompt:
                return
            inputs = prompt[nid]["inputs"]
            for key in sorted(inputs):
                if is_link(inputs[key]):
                    aid = inputs[key][0]
                    if aid not in order:
                        ancestors.append(aid)
                        order[aid] = len(ancestors) - 1
                        walk(aid)

        def immediate(nid: str) -> Any:
            if nid not in prompt:
                return (_Unhashable(),)
            node = prompt[nid]
            sig: list[Any] = [node["class_type"], _hashable(is_changed.get(nid, False))]
            if nid in id_nodes:
                sig.append(nid)
            for key in sorted(node["inputs"]):
                value = node["inputs"][key]
                if is_link(value):
                    sig.append((key, ("ANCESTOR", order[value[0]], value[1])))
                else:
                    sig.append((key, _hashable(value)))
            return tuple(sig)

        walk(node_id)
        return tuple([immediate(node_id)] + [immediate(a) for a in ancestors])

    def get(self, node_id: str) -> Any:
        key = self.keys.get(node_id)
        return None if key is None else self.cache.get(key)

    def set(self, node_id: str, value: Any) -> None:
        self.cache[self.keys[node_id]] = value

    def all_node_ids(self) -> list[str]:
        return list(self.keys)

    def clear(self) -> None:
        self.cache.clear()


class CacheSet:
    """outputs / ui / objects caches; ``cache_none`` empties them at every prompt start."""

    def __init__(self, cache_none: bool) -> None:
        self.cache_none = cache_none
        self.outputs = NodeCache()
        self.ui = NodeCache()
        self.objects = NodeCache(by_id=True)

    def set_prompt(self, prompt: dict[str, Any], is_changed: dict[str, Any], id_nodes: set[str]) -> None:
        for cache in (self.outputs, self.ui, self.objects):
            if self.cache_none:
                cache.clear()
            cache.set_prompt(prompt, is_changed, id_nodes)
