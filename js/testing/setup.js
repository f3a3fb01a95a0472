// jsdom has no blob URLs; count them so tests can check that views revoke what they create.
import { beforeEach } from "vitest";

let next = 0;
globalThis.liveBlobUrls = new Set();
URL.createObjectURL = () => {
  const url = `blob:nw-test/${next++}`;
  globalThis.liveBlobUrls.add(url);
  return url;
};
URL.revokeObjectURL = (url) => globalThis.liveBlobUrls.delete(url);
beforeEach(() => globalThis.liveBlobUrls.clear());
