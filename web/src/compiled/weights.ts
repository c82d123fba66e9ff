// Weights from shards to device tensors: each tensor record lists the pieces of shards
// that hold its bytes, in order (docs/FORMAT.md, "tensors").

import type * as tvmjs from "@mlc-ai/web-runtime";
import { ModelLoadError } from "../base/errors";
import type { TensorRecord } from "../base/manifest";
import type { LoadedModule } from "../base/tvm";

/** What an error calls a record: "unet/conv_in.weight" when it belongs to a component. */
function labelOf(record: TensorRecord & { component?: string }): string {
  return record.component ? `${record.component}/${record.name}` : record.name;
}

/**
 * A record's bytes: a view of its shard when it is one piece (no copy), else the pieces
 * joined. Refused unless they are exactly `nbytes` (a wrong manifest must not upload
 * a truncated or shifted tensor).
 */
function recordBytes(record: TensorRecord, shards: readonly Uint8Array[]): Uint8Array {
  const label = labelOf(record);
  const parts = record.pieces.map((piece) => {
    const shard = shards[piece.shard];
    if (!shard) throw new ModelLoadError(`tensor ${label} refers to missing shard ${piece.shard}`);
    return shard.subarray(piece.offset, piece.offset + piece.nbytes);
  });
  const total = parts.reduce((n, part) => n + part.length, 0);
  if (total !== record.nbytes) {
    throw new ModelLoadError(`tensor ${label} has ${total} bytes in its shards, expected ${record.nbytes}`);
  }
  const only = parts.length === 1 ? parts[0] : undefined;
  if (only) return only;
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

/** The records' tensors on the module's device, in record order (the entry points' parameter order). */
export function uploadWeights(mod: LoadedModule, records: readonly TensorRecord[], shards: readonly Uint8Array[]): tvmjs.TVMArray {
  const { tvm, device } = mod;
  return tvm.withNewScope(() => {
    const tensors = records.map((r) => tvm.empty(r.shape, r.dtype, device).copyFromRawBytes(recordBytes(r, shards)));
    return tvm.detachFromCurrentScope(tvm.makeTVMArray(tensors));
  });
}
