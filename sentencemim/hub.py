"""Models on the Hugging Face Hub (the `hub` extra, huggingface_hub), following that
library's conventions:

    SentenceMIM.from_pretrained("org/name")                     # snapshot_download into the HF cache
    SentenceMIM.from_pretrained("org/name", revision="v1.0")    # a branch, tag or commit
    m.save_pretrained("models/name", push_to_hub=True)           # repo id defaults to the folder name
    m.push_to_hub("org/name", private=True)

A name is taken for a repo id only when no local path of that name exists and it has
the form `owner/name`. The cache, offline mode and token are huggingface_hub's own
(HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE=1, HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError

MODEL_FILES = ["config.json", "model.safetensors", "vocab.json", "README.md"]
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name and not name.endswith((".pt", ".json"))


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub


def _hub_failure(e: Exception) -> str:
    """huggingface_hub's error as a short clause (its messages run to several lines)."""
    kind = type(e).__name__
    text = str(e)
    if kind == "RevisionNotFoundError":  # its message starts with "404" too
        return "it has no such revision"
    if kind in ("RepositoryNotFoundError", "GatedRepoError"):
        return "no repo by that name could be read (not found, private or gated)"
    if kind == "LocalEntryNotFoundError" or "ConnectError" in text or "Name or service not known" in text:
        return "it is not in the local Hub cache and the Hub could not be reached (offline?)"
    if text.startswith("404"):
        return "the Hub has no such repo or file (404)"
    first = (text.strip().splitlines() or [kind])[0][:160]
    return f"it could not be fetched ({kind}: {first})"


def resolve(path: str | Path, revision: str | None = None, token: str | None = None,
            cache_dir: str | Path | None = None) -> Path:
    """A local path as it is; an `owner/name` that is not a local path -> the folder of
    its Hub snapshot (downloaded, or found in the cache when offline)."""
    name = str(path)
    if Path(name).exists() or not looks_like_repo_id(name):
        if revision is not None:
            raise UserError(f"{name}: revision={revision!r} applies to Hugging Face Hub repo ids only")
        return Path(name)
    hub = _hub()
    if hub is None:
        raise UserError(f"{name}: no such model directory or checkpoint here; to load it from the Hugging Face Hub "
                        f"install the hub extra: pip install 'sentencemim[hub]'")
    try:
        folder = hub.snapshot_download(name, revision=revision, token=token, cache_dir=cache_dir,
                                       allow_patterns=MODEL_FILES)
    except Exception as e:  # noqa: BLE001 -- huggingface_hub's errors (HTTP, offline, not cached, bad id)
        raise UserError(f"{name}: no such model directory or checkpoint here; read as a Hugging Face Hub "
                        f"repo id, {_hub_failure(e)}") from None
    return Path(folder)


def push(folder: str | Path, repo_id: str, commit_message: str = "Upload sentencemim model",
         private: bool | None = None, token: str | None = None, branch: str | None = None,
         create_pr: bool | None = None):
    """Upload a model directory to `repo_id` (created if missing); returns the CommitInfo."""
    hub = _hub()
    if hub is None:
        raise UserError("push_to_hub needs the hub extra: pip install 'sentencemim[hub]'")
    folder = Path(folder)
    missing = [f for f in MODEL_FILES[:3] if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{folder}: not a model directory (missing {', '.join(missing)})")
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                             revision=branch, create_pr=create_pr, allow_patterns=MODEL_FILES, repo_type="model")
