"""Where traces and results are stored: a local folder, or a prefix in an object store.

A path of the form `scheme://...` (s3://, gs://, memory://, ...; file:// aside) is a URL and its
objects are reached through fsspec; anything else is a local path, read and written with plain
file calls as before. URLs are kept as they are given everywhere (in a trace's identity, in the
spec a Ray worker gets), so that every process reads the store itself.

Each store offers the few operations a trace needs, on keys relative to its root (`a/b/c`):
the size of an object, a read of at most a given number of bytes, the sizes of every object
under the root, a write of a whole object, the replacement of a document (atomic: readers see the
old or the new one), removal, and a zarr store for zarr.open_group. A local store writes a file in
place and replaces a document by a temporary file and a rename; an object store does both by one
PUT, which replaces an object whole.

Object stores take their credentials and endpoint from fsspec's usual configuration: for S3
(s3fs) AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE,
AWS_DEFAULT_REGION and AWS_ENDPOINT_URL (or FSSPEC_S3_ENDPOINT_URL, fsspec's own), or an
instance role.
"""

import contextlib
import os
import re
import shutil

from forging_tf import errors

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# The package that gives fsspec each common scheme, and how to install it.
_PACKAGES = {
    "s3": "s3fs: pip install 'forging_tf[s3]'",
    "s3a": "s3fs: pip install 'forging_tf[s3]'",
    "gs": "gcsfs: pip install gcsfs",
    "gcs": "gcsfs: pip install gcsfs",
}


def is_url(path: str) -> bool:
  """Whether `path` names objects in a store reached through fsspec (a scheme other than file)."""
  match = _URL.match(path)
  return match is not None and match.group(1).lower() != "file"


def absolute(path: str) -> str:
  """A URL as it is; a local path (file:// removed) made absolute."""
  if is_url(path):
    return path
  return os.path.abspath(path.removeprefix("file://"))


def join(base: str, name: str) -> str:
  """`name` (a relative key, `/`-separated) under the folder or URL `base`."""
  if is_url(base):
    return f"{base.rstrip('/')}/{name}"
  return os.path.join(base, name)


def at(path: str) -> "LocalStorage | ObjectStorage":
  """The store rooted at `path`, a local folder or a URL (is_url)."""
  if is_url(path):
    return ObjectStorage(path)
  return LocalStorage(path.removeprefix("file://"))


def read_object(url: str) -> bytearray:
  """The whole object at `url`."""
  prefix, _, key = url.rstrip("/").rpartition("/")
  return ObjectStorage(prefix).read(key)


class LocalStorage:
  """A local folder."""

  def __init__(self, root: str):
    self.root = root

  def _path(self, key: str) -> str:
    return os.path.join(self.root, key)

  def exists(self) -> bool:
    return os.path.isdir(self.root)

  def size(self, key: str) -> int:
    return os.path.getsize(self._path(key))

  def read(self, key: str, limit: int | None = None) -> bytearray:
    """The object's bytes, at most `limit` of them (None: all)."""
    with open(self._path(key), "rb") as f:
      if limit is None:
        return bytearray(f.read())
      data = bytearray(limit)
      del data[f.readinto(data) :]
      return data

  def sizes(self) -> dict[str, int]:
    """The size of every file under the folder, by key.

    A trace is a folder of folders and regular files: a symbolic link could lead a reader out of
    it, and a device or pipe could be read forever, so either is a TraceError.
    """
    sizes, pending = {}, [self.root]
    while pending:
      folder = pending.pop()
      with os.scandir(folder) as entries:
        for entry in entries:
          key = os.path.relpath(entry.path, self.root)
          if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
            raise errors.TraceError(
                f"{self.root}: {key} is a link or a special file; a trace holds only folders "
                "and regular files"
            )
          if entry.is_dir():
            pending.append(entry.path)
          else:
            sizes[key.replace(os.sep, "/")] = entry.stat().st_size
    return sizes

  def write(self, key: str, data) -> None:
    """Writes the file in place (its folder must exist)."""
    fd = os.open(self._path(key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
      view = memoryview(data).cast("B")
      while view:
        view = view[os.write(fd, view) :]
    finally:
      os.close(fd)

  def replace(self, key: str, data: bytes) -> None:
    """Replaces the file atomically: a whole new file, then a rename."""
    path = self._path(key)
    partial = path + ".partial"
    with open(partial, "wb") as f:
      f.write(data)
    os.replace(partial, path)

  def remove_all(self, first: tuple[str, ...] = ()) -> None:
    """Deletes the folder, all at once (`first` orders an object store's deletions)."""
    shutil.rmtree(self.root)

  def zarr_store(self, read_only: bool):
    import zarr  # pylint: disable=import-outside-toplevel

    return zarr.storage.LocalStore(self.root, read_only=read_only)


class ObjectStorage:
  """The objects under a URL's prefix, through fsspec. Keys are only ever joined to the prefix,
  and listings keep only what lies under it, so nothing outside the prefix is read."""

  def __init__(self, url: str):
    self.url = url.rstrip("/")
    scheme = _URL.match(url).group(1).lower()
    segments = self.url[len(scheme) + 3 :].split("/")
    if "." in segments or ".." in segments:
      raise errors.ConfigError(f"{url}: a storage URL has no '.' or '..' segments")
    try:
      import fsspec  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise errors.ConfigError(
          f"{url}: storage URLs need fsspec: pip install 'forging_tf[s3]'"
      ) from None
    try:
      self._fs, self._root = fsspec.core.url_to_fs(self.url)
    except ImportError as e:
      needed = _PACKAGES.get(scheme, f"the fsspec implementation of {scheme}:// ({e})")
      raise errors.ConfigError(f"{url}: {scheme}:// needs {needed}") from None
    except ValueError as e:
      raise errors.ConfigError(f"{url}: fsspec knows no storage {scheme}://") from e
    self._root = self._root.rstrip("/")

  def _path(self, key: str) -> str:
    return f"{self._root}/{key}"

  @contextlib.contextmanager
  def _errors(self):
    """A store's own exceptions (a refused connection, a service error) as OSErrors naming the
    URL, which callers already turn into one-line errors."""
    try:
      yield
    except OSError:
      raise
    except Exception as e:  # s3fs, gcsfs, aiohttp and botocore each have their own.
      raise OSError(f"{self.url}: {type(e).__name__}: {e}") from e

  def exists(self) -> bool:
    return bool(self.sizes())

  def size(self, key: str) -> int:
    with self._errors():
      self._fs.invalidate_cache()  # A listing cached earlier must not answer for a newer object.
      return int(self._fs.size(self._path(key)))

  def read(self, key: str, limit: int | None = None) -> bytearray:
    """The object's bytes, at most `limit` of them (a ranged read; None: all)."""
    with self._errors():
      return bytearray(self._fs.cat_file(self._path(key), start=0, end=limit))

  def sizes(self) -> dict[str, int]:
    """The size of every object under the prefix, by key."""
    with self._errors():
      self._fs.invalidate_cache()
      found = self._fs.find(self._root, detail=True)
    under = self._root + "/"
    return {
        path[len(under) :]: int(info["size"])
        for path, info in found.items()
        if path.startswith(under) and info.get("type", "file") == "file"
    }

  def write(self, key: str, data) -> None:
    """Writes the object by one PUT: readers see the old object or the new one, never a part."""
    with self._errors():
      self._fs.pipe_file(self._path(key), bytes(data))

  replace = write

  def remove(self, keys) -> None:
    if keys:
      with self._errors():
        self._fs.rm([self._path(key) for key in keys])

  def remove_all(self, first: tuple[str, ...] = ()) -> None:
    """Deletes every object under the prefix, the keys `first` (that mark what the prefix
    holds) before the rest."""
    keys = self.sizes()
    self.remove([key for key in first if key in keys])
    self.remove([key for key in keys if key not in first])

  def upload(self, local_path: str, key: str) -> None:
    with self._errors():
      self._fs.put_file(local_path, self._path(key))

  def download(self, key: str, local_path: str) -> None:
    with self._errors():
      self._fs.get_file(self._path(key), local_path)

  def zarr_store(self, read_only: bool):
    import zarr  # pylint: disable=import-outside-toplevel

    with self._errors():
      return zarr.storage.FsspecStore.from_url(self.url, read_only=read_only)
