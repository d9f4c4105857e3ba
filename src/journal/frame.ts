// Frames: `u32 length | u32 crc32 | body`, big-endian, the body being one
// msgpack value. The same framing serves the journal files and (later) the
// wire; the length bound is checked before anything is allocated.
import { crc32 } from 'node:zlib';
import { FrameTooLarge } from '../core/errors.js';
import { limits } from '../core/limits.js';

export const FRAME_HEADER_BYTES = 8;

export type FrameRead =
  | { readonly kind: 'frame'; readonly body: Buffer; readonly end: number }
  /** The buffer ends before the frame does; `bytes` is the whole frame's size when known. */
  | { readonly kind: 'incomplete'; readonly bytes: number | null }
  | { readonly kind: 'corrupt'; readonly reason: string };

export function encodeFrame(body: Uint8Array, bytesMax: number = limits.frameBytesMax): Buffer {
  if (body.length > bytesMax) throw new FrameTooLarge(body.length, bytesMax);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.writeUInt32BE(crc32(body), 4);
  frame.set(body, FRAME_HEADER_BYTES);
  return frame;
}

/** Read the frame that starts at `offset`; never reads past `buffer.length`. */
export function readFrame(buffer: Buffer, offset: number, bytesMax: number = limits.frameBytesMax): FrameRead {
  if (buffer.length - offset < FRAME_HEADER_BYTES) return { kind: 'incomplete', bytes: null };
  const length = buffer.readUInt32BE(offset);
  if (length === 0) return { kind: 'corrupt', reason: 'zero-length frame' };
  if (length > bytesMax) return { kind: 'corrupt', reason: `frame length ${length} exceeds the limit of ${bytesMax} bytes` };
  const end = offset + FRAME_HEADER_BYTES + length;
  if (end > buffer.length) return { kind: 'incomplete', bytes: FRAME_HEADER_BYTES + length };
  const body = buffer.subarray(offset + FRAME_HEADER_BYTES, end);
  const expected = buffer.readUInt32BE(offset + 4);
  if (crc32(body) !== expected) return { kind: 'corrupt', reason: 'checksum mismatch' };
  return { kind: 'frame', body, end };
}
