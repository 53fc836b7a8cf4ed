// A dedicated worker that writes received files into the origin-private file system in place,
// through a sync access handle (only workers have them): no swap-file copy as with
// createWritable, and what is written survives a closed tab, so a transfer can resume.
// One file open at a time. Messages: {id, op, ...} in, {id, size?} or {id, error} out.
//   probe: fails where this browser has no sync access handles
//   open  {dir, name, size}: opens (creating) dir/name and cuts it to `size` bytes
//   write {at, data: ArrayBuffer, offset}: writes data[offset..] at byte `at`
//   close: flushes and closes
let handle = null;

async function open(dir, name, size) {
  const root = await navigator.storage.getDirectory();
  const d = await root.getDirectoryHandle(dir, { create: true });
  const file = await d.getFileHandle(name, { create: true });
  handle = await file.createSyncAccessHandle();
  handle.truncate(size);
  return handle.getSize();
}

function write(at, data, offset) {
  const bytes = new Uint8Array(data, offset);
  let done = 0;
  while (done < bytes.length) {
    const n = handle.write(bytes.subarray(done), { at: at + done });
    if (n <= 0) throw new Error('the browser stopped taking bytes (storage full?)');
    done += n;
  }
}

self.onmessage = async ({ data: m }) => {
  try {
    let size;
    if (m.op === 'probe') {
      if (typeof FileSystemSyncAccessHandle === 'undefined') throw new Error('no sync access handles');
    } else if (m.op === 'open') size = await open(m.dir, m.name, m.size);
    else if (m.op === 'write') write(m.at, m.data, m.offset);
    else if (m.op === 'close') {
      handle?.flush();
      handle?.close();
      handle = null;
    } else throw new Error(`unknown op ${m.op}`);
    self.postMessage({ id: m.id, size });
  } catch (e) {
    self.postMessage({ id: m.id, error: String(e?.message ?? e) });
  }
};
