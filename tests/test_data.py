"""nanogpt2.data: the per-rank training loaders (shards and streaming), validation, local files, the Hub."""

import json

import numpy as np
import pytest
import torch

from nanogpt2.data import (
    BatchPrefetcher,
    StreamingTrainLoader,
    TrainLoader,
    ValidationLoader,
    open_token_shards,
)
from nanogpt2.documents import tokenize_files
from nanogpt2.errors import DataError
from nanogpt2.prepare import Source, prepare_shards
from nanogpt2.sources import load_hub_text_dataset
from nanogpt2.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, english_mix_file):
    out = tmp_path_factory.mktemp("shards")
    manifest = prepare_shards(Source(data_files=[str(english_mix_file)]), out, shard_size=100_000, num_proc=1,
                              max_tokens=400_000, progress=False)
    return out, manifest


def test_prefetcher_hands_out_the_same_batches_and_saves_the_consumed_position(prepared):
    out, _ = prepared
    arrays = open_token_shards(out, "train")
    plain, prefetched = TrainLoader(arrays, 2, 32, seed=3), BatchPrefetcher(TrainLoader(arrays, 2, 32, seed=3), depth=3)
    for _ in range(4):
        assert all(torch.equal(a, b) for a, b in zip(plain.next_batch(), prefetched.next_batch()))
    # the thread reads up to `depth` batches ahead; the saved position is after the 4 handed out
    state = json.loads(json.dumps(prefetched.state_dict()))
    assert state == plain.state_dict() and prefetched.batch_size == 2
    expected = plain.next_batch()[0]
    restored = BatchPrefetcher(TrainLoader(arrays, 2, 32, seed=3))
    restored.load_state_dict(state)
    assert torch.equal(restored.next_batch()[0], expected)
    # close() rewinds the wrapped loader to the consumed position; reading continues from there
    prefetched.close()
    assert prefetched.loader.state_dict() == state
    assert torch.equal(prefetched.next_batch()[0], expected)
    prefetched.close(), restored.close()


def test_prefetcher_raises_the_loaders_error_in_the_caller():
    class Failing:
        def state_dict(self):
            return {}

        def next_batch(self):
            raise DataError("shard vanished")

    with pytest.raises(DataError, match="shard vanished"):
        BatchPrefetcher(Failing()).next_batch()


def test_train_loader_ranks_disjoint_cover_and_resume(prepared):
    out, _ = prepared
    arrays = open_token_shards(out, "train")
    batch, seq = 4, 64
    per_rank = [TrainLoader(arrays, batch, seq, rank=r, world_size=2, seed=7) for r in range(2)]
    windows = {0: [], 1: []}
    steps = per_rank[0].windows_per_epoch // 2
    for rank, loader in enumerate(per_rank):
        for _ in range(steps):
            x, y = loader.next_batch()
            assert x.shape == (batch, seq) and x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
            windows[rank].append(x.numpy())
    as_bytes = [{w.tobytes() for w in windows[rank]} for rank in range(2)]
    assert not as_bytes[0] & as_bytes[1] and len(as_bytes[0] | as_bytes[1]) == 2 * steps
    # together the ranks read every token of the epoch once, but for less than two windows at the end
    all_tokens = np.bincount(np.concatenate([np.asarray(a) for a in arrays]), minlength=50257)
    read = np.bincount(np.concatenate([w.flatten() for w in windows[0] + windows[1]]), minlength=50257)
    assert (read <= all_tokens).all() and 0 <= all_tokens.sum() - read.sum() < 2 * batch * seq + 1
    # exact resume: a loader restored from a state gives the very next batch
    loader = TrainLoader(arrays, batch, seq, seed=7)
    for _ in range(5):
        loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))
    expected = loader.next_batch()[0]
    restored = TrainLoader(arrays, batch, seq, seed=7)
    restored.load_state_dict(state)
    assert np.array_equal(restored.next_batch()[0], expected)
    # a new epoch reshuffles shard and document order: its batches come in another order
    a = TrainLoader(arrays, batch, seq, seed=7)
    epochs = [[a.next_batch()[0].numpy().tobytes() for _ in range(a.windows_per_epoch)] for _ in range(2)]
    assert a.epoch == 1 and epochs[0] != epochs[1]
    unshuffled = TrainLoader(arrays, batch, seq, shuffle=False)
    assert np.array_equal(unshuffled.next_batch()[0].flatten(), np.asarray(arrays[0][: batch * seq]))


def test_train_loader_state_reshards_to_another_number_of_processes(prepared):
    """2 ranks after 3 batches each = global windows 0-5; 3 ranks continue at windows 6, 7, 8; 1 rank
    reads them in order; 4 ranks cannot (6 windows read are not a multiple of 4)."""
    arrays = open_token_shards(prepared[0], "train")
    one = TrainLoader(arrays, 4, 64, seed=7)
    stream = [one.next_batch()[0] for _ in range(9)]
    two = [TrainLoader(arrays, 4, 64, rank=r, world_size=2, seed=7) for r in range(2)]
    for loader in two:
        for _ in range(3):
            loader.next_batch()
    state = json.loads(json.dumps(two[0].state_dict()))
    for world_size in (1, 3):
        loaders = [TrainLoader(arrays, 4, 64, rank=r, world_size=world_size, seed=7) for r in range(world_size)]
        for loader in loaders:
            loader.load_state_dict(state)
        nxt = [batch[0] for _ in range(3 // world_size) for batch in (lo.next_batch() for lo in loaders)]
        assert all(torch.equal(a, b) for a, b in zip(nxt, stream[6:9], strict=True))
    with pytest.raises(DataError, match="6 windows read this epoch is not a multiple of 4"):
        TrainLoader(arrays, 4, 64, rank=0, world_size=4, seed=7).load_state_dict(state)
    with pytest.raises(DataError, match="window_tokens was 256, now 512"):
        TrainLoader(arrays, 8, 64, seed=7).load_state_dict(state)


def test_validation_loader_independent_of_process_count(prepared):
    out, _ = prepared
    arrays = open_token_shards(out, "val")
    single = [x.numpy().tobytes() for x, _ in ValidationLoader(arrays, 2, 32, num_batches=10)]
    split = [x.numpy().tobytes() for r in range(3) for x, _ in ValidationLoader(arrays, 2, 32, 10, r, 3)]
    assert len(single) == 10 and sorted(single) == sorted(split)
    assert single == [x.numpy().tobytes() for x, _ in ValidationLoader(arrays, 2, 32, num_batches=10)]


def test_tokenize_files_formats(tmp_path):
    (tmp_path / "a.txt").write_text("Hello world")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Hello"}) + "\n" + json.dumps({"text": " world"}) + "\n")
    assert tokenize_files(tmp_path / "a.txt", load_tokenizer()).tolist() == [50256, 15496, 995]
    assert tokenize_files(tmp_path / "b.jsonl", load_tokenizer()).tolist() == [50256, 15496, 50256, 995]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(DataError, match="bad.jsonl:2: no 'text' field"):
        tokenize_files(tmp_path / "bad.jsonl", load_tokenizer())


def test_tokenize_files_two_processes_give_the_same_stream(tmp_path, english_mix_file, tinyshakespeare_file):
    with open(english_mix_file, encoding="utf-8") as f:
        (tmp_path / "docs.jsonl").write_text("".join(line for _, line in zip(range(300), f)), encoding="utf-8")
    files = [tmp_path / "docs.jsonl", tinyshakespeare_file]
    one = tokenize_files(files, load_tokenizer())
    two = tokenize_files(files, load_tokenizer(), num_proc=2)
    assert one.dtype == np.uint16 and np.array_equal(one, two)
    assert np.count_nonzero(one == 50256) == 300 + 1  # the rows, then Tiny Shakespeare as one document


def test_hub_dataset_offline_or_unreachable_fails_at_once(monkeypatch):
    with pytest.raises(DataError, match="cannot be loaded offline.*--data_files.*--train_file"):
        load_hub_text_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT")
    # no HF_HUB_OFFLINE but no connection: one failed request, not datasets' retries with back-off
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    with pytest.raises(DataError, match="could not reach the Hub for HuggingFaceFW/fineweb-edu .*--data_files"):
        load_hub_text_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT")


@pytest.fixture
def small_jsonl(tmp_path, english_mix_file):
    """30 short documents (so a few batches cross an epoch) in two files."""
    with open(english_mix_file, encoding="utf-8") as f:
        texts = [json.loads(line)["text"][:300] for _, line in zip(range(30), f)]
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for file, part in zip(files, (texts[:15], texts[15:])):
        file.write_text("".join(json.dumps({"text": t}) + "\n" for t in part), encoding="utf-8")
    return [str(f) for f in files], texts


def test_streaming_loader_exact_resume_across_epochs(small_jsonl):
    files, texts = small_jsonl

    def loader():
        return StreamingTrainLoader(load_hub_text_dataset(None, data_files=files, streaming=True), load_tokenizer(),
                                    2, 32, seed=3, shuffle_buffer=8)

    reference = loader()
    batches = [reference.next_batch() for _ in range(80)]
    assert reference.epoch >= 2  # several epochs of the 30 documents
    for x, y in batches:
        assert x.shape == (2, 32) and np.array_equal(x[:, 1:], y[:, :-1])
    for stop in (7, 23):  # mid-epoch with a full buffer, and in a later epoch
        partial = loader()
        for _ in range(stop):
            partial.next_batch()
        state = json.loads(json.dumps(partial.state_dict()))
        resumed = loader()
        resumed.load_state_dict(state)
        for x, _ in batches[stop : stop + 10]:
            assert np.array_equal(resumed.next_batch()[0], x)
    # the buffer shuffles documents, differently each epoch: the first epoch is not the file order
    tokenizer = load_tokenizer()
    in_file_order = np.concatenate([[50256] + tokenizer.encode_ordinary(t) for t in texts])
    assert not np.array_equal(batches[0][0].flatten(), in_file_order[:64])


def test_streaming_loader_ranks_read_disjoint_documents(small_jsonl):
    files, texts = small_jsonl
    tokenizer = load_tokenizer()
    seen = []
    for rank in range(2):
        dataset = load_hub_text_dataset(None, data_files=files, streaming=True)
        loader = StreamingTrainLoader(dataset, tokenizer, 4, 32, rank, 2, seed=5, shuffle_buffer=4)
        # consecutive windows share one token, so the inputs x, concatenated, are the rank's token stream
        stream = np.concatenate([loader.next_batch()[0].flatten().numpy() for _ in range(15)])
        documents = np.split(stream, np.flatnonzero(stream == 50256))[1:-1]  # whole documents only
        seen.append({tokenizer.decode(d[1:]) for d in documents})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(texts)


def test_first_line_of_an_error_for_messages():
    from nanogpt2.errors import first_line

    assert first_line(ValueError("\n  503 Service Unavailable\nbody ...")) == "503 Service Unavailable"
    assert first_line(OSError()) == "OSError"  # an empty message: the type, never an IndexError


def _batches_as_before(arrays, batch, seq, rank, world_size, seed, shuffle, count):
    """TrainLoader as it was when every shard was read at start-up (one table of every document per epoch):
    the reference that the lazy loader must reproduce batch for batch."""
    arrays = [np.asarray(a) for a in arrays]
    spans = []
    for a in arrays:
        starts = np.flatnonzero(a == 50256)
        if len(starts) == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        spans.append(np.stack([starts, np.diff(np.append(starts, len(a)))], axis=1))
    window_tokens, windows = batch * seq, (sum(len(a) for a in arrays) - 1) // (batch * seq)
    epoch, step, out = 0, 0, []

    def table_of(epoch):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(arrays)) if shuffle else np.arange(len(arrays))
        rows = []
        for index in order:
            s = spans[index][rng.permutation(len(spans[index]))] if shuffle else spans[index]
            rows.append(np.column_stack([np.full(len(s), index), s]))
        table = np.concatenate(rows)
        return table, np.concatenate([[0], np.cumsum(table[:, 2])])

    table, offsets = table_of(0)
    while len(out) < count:
        window = step * world_size + rank
        if window >= (windows // world_size) * world_size:
            epoch, step, window = epoch + 1, 0, rank
            table, offsets = table_of(epoch)
        begin, step = window * window_tokens, step + 1
        row = int(np.searchsorted(offsets, begin, side="right")) - 1
        tokens = []
        while sum(map(len, tokens)) < window_tokens + 1:
            index, start, length = table[row]
            skip = begin + sum(map(len, tokens)) - offsets[row]
            tokens.append(arrays[index][start + skip : start + length][: window_tokens + 1 - sum(map(len, tokens))])
            row += 1
        out.append(np.concatenate(tokens))
    return out


@pytest.mark.parametrize("shuffle", [True, False])
def test_lazy_loader_gives_the_batches_of_the_whole_table_loader(prepared, monkeypatch, shuffle):
    """Documents located shard by shard, as the stream reaches them, with one memory map and one document table
    kept at a time: the same batches, epoch after epoch, as the loader that tabled every document at start-up."""
    import nanogpt2.data
    import nanogpt2.shards

    monkeypatch.setattr(nanogpt2.data, "CACHED_SHARD_TABLES", 1)
    monkeypatch.setattr(nanogpt2.shards._OPEN_MAPS, "capacity", 1)
    arrays = open_token_shards(prepared[0], "train")
    for rank, world_size in ((0, 1), (1, 3)):
        loader = TrainLoader(arrays, 8, 128, rank=rank, world_size=world_size, seed=11, shuffle=shuffle)
        count = 2 * loader.windows_per_epoch // world_size + 3  # into a third epoch
        expected = _batches_as_before(arrays, 8, 128, rank, world_size, 11, shuffle, count)
        for i, window in enumerate(expected):
            x, y = loader.next_batch()
            assert np.array_equal(x.flatten().numpy(), window[:-1]) and y.flatten()[-1] == window[-1], i
        assert loader.epoch == 2 and len(nanogpt2.shards._OPEN_MAPS) == 1
