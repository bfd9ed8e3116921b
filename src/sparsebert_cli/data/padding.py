"""Batches of token sequences as tensors: one padding rule for every collate."""


def longest_input(splits) -> int:
    """The most tokens of any sequence in `splits` (a DatasetDict with input_ids; a
    multiple-choice example's choices each count): the longest batch a collate that pads to its
    longest sequence can make. Read from the Arrow column, not row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    longest = 0
    for split in splits.values():
        column = split.with_format("arrow")["input_ids"]  # the split's rows, after any filter
        while pa.types.is_list(column.type.value_type):  # one list per choice
            column = pc.list_flatten(column)
        if len(column):
            longest = max(longest, pc.max(pc.list_value_length(column)).as_py() or 0)
    return longest


def padded_inputs(batch: list[dict], length: int, pad_token_id: int) -> dict:
    """input_ids, token_type_ids and attention_mask of a batch as long tensors, every sequence
    padded to `length` (input_ids with the tokenizer's pad id, the others with 0); an example's
    field is one sequence, or one per choice (multiple choice: [B, choices, length])."""
    import torch

    def pad(value, filler):
        if value and not isinstance(value[0], int):
            return [pad(choice, filler) for choice in value]
        return list(value) + [filler] * (length - len(value))

    fillers = {"input_ids": pad_token_id, "token_type_ids": 0, "attention_mask": 0}
    return {
        name: torch.tensor([pad(e[name], filler) for e in batch], dtype=torch.long)
        for name, filler in fillers.items()
    }
