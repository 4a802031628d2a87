"""``DagWriter`` contract, run against a folder and against a real moto_server bucket."""

from __future__ import annotations

import asyncio
import stat
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pfactory.scheduler.adapters.dag_writer import DagWriteError, DagWriter, LocalDagWriter, S3DagWriter

SOURCE = "# a DAG file\nDOC_MD = 'café ✓ \U0001f600'\n"


class DagWriterContract:
    """What every backend does; subclasses provide ``writer`` and ``read``."""

    async def read(self, writer: DagWriter, dag_id: str) -> str:
        raise NotImplementedError

    async def test_write_then_list_and_read_back(self, writer: DagWriter) -> None:
        first = await writer.write("pf_score__a__fs_1__v1", SOURCE)
        await writer.write("pf_materialise__fs_1.2.0", "x = 1\n")

        assert first.endswith("pf_score__a__fs_1__v1.py")
        assert await writer.list_ids() == ["pf_materialise__fs_1.2.0", "pf_score__a__fs_1__v1"]
        assert await self.read(writer, "pf_score__a__fs_1__v1") == SOURCE

    async def test_write_replaces_the_previous_source(self, writer: DagWriter) -> None:
        await writer.write("pf_x", "old = 1\n")
        location = await writer.write("pf_x", "new = 2\n")

        assert await self.read(writer, "pf_x") == "new = 2\n"
        assert location == await writer.write("pf_x", "new = 2\n")  # unchanged: same place
        assert await writer.list_ids() == ["pf_x"]

    async def test_remove(self, writer: DagWriter) -> None:
        await writer.write("pf_gone", SOURCE)
        await writer.write("pf_kept", SOURCE)

        assert await writer.remove("pf_gone") is True
        assert await writer.remove("pf_gone") is False
        assert await writer.remove("pf_never_written") is False
        assert await writer.list_ids() == ["pf_kept"]

    async def test_an_empty_place_lists_nothing(self, writer: DagWriter) -> None:
        assert await writer.list_ids() == []

    @pytest.mark.parametrize("dag_id", ["", "../escape", "a/b", ".hidden", "_private", "x y", "a" * 251])
    async def test_ids_that_cannot_name_a_dag_file_are_refused(self, writer: DagWriter, dag_id: str) -> None:
        with pytest.raises(ValueError, match="cannot name a DAG file"):
            await writer.write(dag_id, SOURCE)
        with pytest.raises(ValueError, match="cannot name a DAG file"):
            await writer.remove(dag_id)
        assert await writer.list_ids() == []


class TestLocalDagWriter(DagWriterContract):
    @pytest.fixture
    def writer(self, tmp_path: Path) -> LocalDagWriter:
        return LocalDagWriter(tmp_path / "airflow" / "dags")  # created on first write

    async def read(self, writer: DagWriter, dag_id: str) -> str:
        assert isinstance(writer, LocalDagWriter)
        return writer.path_of(dag_id).read_text(encoding="utf-8")

    async def test_a_concurrent_reader_never_sees_a_partial_file(self, writer: LocalDagWriter) -> None:
        versions = [f"# version {i}\n" + f"x = '{chr(97 + i) * 200}'\n" * 2000 for i in range(4)]
        await writer.write("pf_busy", versions[0])
        target = writer.path_of("pf_busy")
        stop = threading.Event()
        seen: list[str] = []
        torn: list[int] = []

        def reader() -> None:
            while not stop.is_set():
                text = target.read_text(encoding="utf-8")
                seen.append(text[:14])
                if text not in versions:
                    torn.append(len(text))

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(40):
                await writer.write("pf_busy", versions[i % len(versions)])
        finally:
            stop.set()
            thread.join(10)

        assert torn == [], f"the reader saw {len(torn)} partial files (sizes {torn[:5]})"
        assert len(seen) > 40 and len(set(seen)) > 1  # it read while the file changed
        assert [p.name for p in writer.folder.iterdir()] == ["pf_busy.py"]  # no temporary left behind

    async def test_an_unchanged_file_is_not_rewritten(self, writer: LocalDagWriter) -> None:
        await writer.write("pf_same", SOURCE)
        before = writer.path_of("pf_same").stat()
        await writer.write("pf_same", SOURCE)
        after = writer.path_of("pf_same").stat()

        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert stat.S_IMODE(after.st_mode) & 0o044 == 0o044  # Airflow (another user) can read it

    async def test_other_files_are_not_listed(self, writer: LocalDagWriter) -> None:
        await writer.write("pf_real", SOURCE)
        (writer.folder / ".pf_real.py.0123.tmp").write_text("half")
        (writer.folder / "README.md").write_text("notes")
        (writer.folder / "__init__.py").write_text("")
        (writer.folder / "sub.py").mkdir()

        assert await writer.list_ids() == ["pf_real"]

    async def test_an_unwritable_folder_is_reported_with_its_path(self, tmp_path: Path) -> None:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the folder should be")
        writer = LocalDagWriter(blocker)

        with pytest.raises(DagWriteError, match=f"could not write the DAG file {blocker}/pf_x.py"):
            await writer.write("pf_x", SOURCE)


@pytest.mark.integration
class TestS3DagWriter(DagWriterContract):
    @pytest.fixture
    async def writer(self, moto: str) -> AsyncIterator[S3DagWriter]:
        writer = S3DagWriter(
            f"dags-{uuid.uuid4().hex[:8]}", "airflow/dags/", endpoint_url=moto, region="eu-west-1"
        )
        await writer.create_bucket()
        try:
            yield writer
        finally:
            await writer.close()

    async def read(self, writer: DagWriter, dag_id: str) -> str:
        assert isinstance(writer, S3DagWriter)
        s3 = await writer._s3()
        answer = await s3.get_object(Bucket=writer.bucket, Key=writer.key_of(dag_id))
        async with answer["Body"] as body:
            data: bytes = await body.read()
        assert answer["ContentType"].startswith("text/x-python")
        return data.decode("utf-8")

    async def test_locations_are_s3_uris_and_other_keys_are_not_listed(self, writer: S3DagWriter) -> None:
        location = await writer.write("pf_real", SOURCE)
        s3 = await writer._s3()
        for key in ("airflow/dags/nested/pf_deeper.py", "airflow/dags/notes.md", "airflow/other.py"):
            await s3.put_object(Bucket=writer.bucket, Key=key, Body=b"x")

        assert location == f"s3://{writer.bucket}/airflow/dags/pf_real.py"
        assert await writer.list_ids() == ["pf_real"]

    async def test_an_unchanged_file_is_not_put_again(self, writer: S3DagWriter) -> None:
        s3 = await writer._s3()
        await s3.put_bucket_versioning(Bucket=writer.bucket, VersioningConfiguration={"Status": "Enabled"})
        await writer.write("pf_same", SOURCE)
        await writer.write("pf_same", SOURCE)
        await writer.write("pf_same", SOURCE + "# changed\n")

        listed = await s3.list_object_versions(Bucket=writer.bucket, Prefix=writer.key_of("pf_same"))
        assert len(listed["Versions"]) == 2

    async def test_a_missing_bucket_is_reported_with_advice(self, moto: str) -> None:
        async with S3DagWriter("no-such-bucket", endpoint_url=moto, region="eu-west-1") as writer:
            with pytest.raises(
                DagWriteError, match=r"s3://no-such-bucket/pf_x.py: NoSuchBucket.*create the bucket"
            ):
                await writer.write("pf_x", SOURCE)

    async def test_many_concurrent_writes_on_one_client(self, writer: S3DagWriter) -> None:
        ids = [f"pf_score__m{i}__fs_1__v1" for i in range(30)]
        await asyncio.gather(*(writer.write(dag_id, f"N = {i}\n") for i, dag_id in enumerate(ids)))

        assert await writer.list_ids() == sorted(ids)
        assert await self.read(writer, ids[7]) == "N = 7\n"


def test_the_prefix_must_be_a_folder() -> None:
    with pytest.raises(ValueError, match="must end with '/'"):
        S3DagWriter("bucket", "dags")
