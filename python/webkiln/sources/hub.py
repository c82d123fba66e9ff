"""Download a Hugging Face Hub model (`org/name`) into the local Hub cache and load it as a folder:
a chat model (config.json) or a diffusers pipeline (model_index.json)."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

from ..model_source import ModelSource, SourceError
from .diffusers_folder import DiffusersPipeline, hub_files, load_diffusers_folder
from .hf_folder import load_hf_folder

# Only what a chat-model folder load reads: configs, tokenizer files, chat template, safetensors.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def looks_like_hub_id(spec: str) -> bool:
    """`org/name` with Hub-legal characters, and not a file path (no .gguf, no leading dot)."""
    return bool(_HUB_ID.match(spec)) and not spec.lower().endswith(".gguf") and ".." not in spec


def download_hub(repo_id: str, revision: str | None = None, endpoint: str | None = None,
                 variant: str | None = None) -> Path:
    """The repository's file list decides what is fetched: a diffusers pipeline gets exactly the
    files its loader reads (`diffusers_folder.hub_files`), anything else ALLOW_PATTERNS. When the
    Hub cannot be reached, a snapshot already in the local Hub cache is used."""
    try:
        try:
            info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision)
        except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except Exception as error:  # unreachable or HF_HUB_OFFLINE: the local cache, if it has the model
            # (the Hub client moves only complete files into a snapshot; a missing one is the loader's error)
            for marker in ("model_index.json", "config.json"):
                cached = try_to_load_from_cache(repo_id, marker, revision=revision)
                if isinstance(cached, str):
                    return Path(cached).parent
            raise error
        files = [sibling.rfilename for sibling in info.siblings or []]
        patterns = hub_files(repo_id, files, variant) if "model_index.json" in files else ALLOW_PATTERNS
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, endpoint=endpoint)
    except SourceError:
        raise
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


def load_hub(repo_id: str, revision: str | None = None, endpoint: str | None = None,
             variant: str | None = None) -> ModelSource | DiffusersPipeline:
    folder = download_hub(repo_id, revision=revision, endpoint=endpoint, variant=variant)
    if (folder / "model_index.json").is_file():
        return load_diffusers_folder(folder, variant, origin=repo_id, name=repo_id.split("/")[-1])
    if not (folder / "config.json").is_file():
        raise SourceError(f"{repo_id}: the repository has neither config.json (a chat model) nor "
                          "model_index.json (a diffusers pipeline); is it a GGUF-only repository? Then download "
                          "the .gguf file and pass its path.")
    return load_hf_folder(folder, kind="hub", origin=repo_id)
