// @ts-check
/** PNG buffers from Python (DataView / ArrayBuffer / typed array) as blob URLs, revoked when done. */

/**
 * @param {DataView | ArrayBuffer | ArrayBufferView | null | undefined} buffer
 * @returns {Uint8Array}
 */
export function bytesOf(buffer) {
  if (!buffer) return new Uint8Array(0);
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Blob URLs made by one view; `revokeAll` frees them (call it on re-render and in the cleanup). */
export class UrlPool {
  constructor() {
    /** @type {string[]} */
    this.urls = [];
  }

  /**
   * @param {DataView | ArrayBuffer | ArrayBufferView | null | undefined} buffer PNG bytes
   * @returns {string} a blob: URL ("" for an empty buffer)
   */
  png(buffer) {
    const bytes = bytesOf(buffer);
    if (bytes.byteLength === 0) return "";
    // the kernel's buffers are never shared memory, so the bytes are a valid BlobPart
    const url = URL.createObjectURL(new Blob([/** @type {Uint8Array<ArrayBuffer>} */ (bytes)], { type: "image/png" }));
    this.urls.push(url);
    return url;
  }

  revokeAll() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }
}
