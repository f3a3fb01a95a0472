// @ts-check
/** PNG buffers from Python (DataView / ArrayBuffer / typed array) shown in <img> elements through blob URLs. */

/**
 * @param {DataView | ArrayBuffer | ArrayBufferView | null | undefined} buffer
 * @returns {Uint8Array}
 */
export function bytesOf(buffer) {
  if (!buffer) return new Uint8Array(0);
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/**
 * Show PNG bytes in `img`. The blob URL is revoked once the image has loaded or failed, not before: revoking
 * it while the browser still fetches it fails the fetch (a console error, ERR_FILE_NOT_FOUND, and no picture),
 * and after the load the decoded picture stays shown. An image removed before it loaded still loads (or
 * fails) and so still frees its URL. An empty buffer clears the image.
 * @template {HTMLImageElement} I
 * @param {I} img
 * @param {DataView | ArrayBuffer | ArrayBufferView | null | undefined} buffer PNG bytes
 * @returns {I} the same element, for building in place
 */
export function showPng(img, buffer) {
  const bytes = bytesOf(buffer);
  if (bytes.byteLength === 0) {
    img.removeAttribute("src");
    return img;
  }
  // the kernel's buffers are never shared memory, so the bytes are a valid BlobPart
  const url = URL.createObjectURL(new Blob([/** @type {Uint8Array<ArrayBuffer>} */ (bytes)], { type: "image/png" }));
  const revoke = () => URL.revokeObjectURL(url);
  img.addEventListener("load", revoke, { once: true });
  img.addEventListener("error", revoke, { once: true });
  img.src = url;
  return img;
}
