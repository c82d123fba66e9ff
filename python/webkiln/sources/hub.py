"""Download a Hugging Face Hub model (`org/name`) into the local Hub cache and load it as a folder."""

from __future__ import annotations

import re
from pathlib import Path

from .base import ModelSource, SourceError
from .hf_folder import load_hf_folder

# Only what a folder load reads: configs, tokenizer files, chat template, safetensors.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def looks_like_hub_id(spec: str) -> bool:
    """`org/name` with Hub-legal characters, and not a file path (no .gguf, no leading dot)."""
    return bool(_HUB_ID.match(spec)) and not spec.lower().endswith(".gguf") and ".." not in spec


def download_hub(repo_id: str, revision: str | None = None, endpoint: str | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS, endpoint=endpoint)
    except GatedRepoError:
        raise SourceError(f"{repo_id}: the Hugging Face Hub repository is gated; accept its terms on the Hub and "
                          "log in (`hf auth login`), or pass a local folder or .gguf path instead.") from None
    except RepositoryNotFoundError:
        raise SourceError(f"{repo_id}: no such Hugging Face Hub repository (or it is private: log in with "
                          "`hf auth login`). Check the id, or pass a local folder or .gguf path instead.") from None
    except RevisionNotFoundError:
        raise SourceError(f"{repo_id}: revision {revision!r} does not exist on the Hugging Face Hub.") from None
    except Exception as error:  # network errors surface as LocalEntryNotFoundError, httpx or OS errors
        raise SourceError(
            f"{repo_id}: the Hugging Face Hub could not be reached and the model is not in the local cache "
            f"({type(error).__name__}). Check the network (or HF_ENDPOINT / HF_HUB_OFFLINE), or pass a local "
            "Hugging Face folder or a .gguf file path instead."
        ) from None
    return Path(folder)


def load_hub(repo_id: str, revision: str | None = None, endpoint: str | None = None) -> ModelSource:
    folder = download_hub(repo_id, revision=revision, endpoint=endpoint)
    if not (folder / "config.json").is_file():
        raise SourceError(f"{repo_id}: the repository has no config.json (is it a GGUF-only repository? then "
                          "download the .gguf file and pass its path).")
    return load_hf_folder(folder, kind="hub", origin=repo_id)
