// One turn of the event loop, for code that runs long synchronous work (a wasm-cpu library
// computes inside each call) and must still let queued messages through, such as a Worker's
// abort. On WebGPU each step already waits for the GPU; on the CPU tvmjs's sync() resolves
// at once (a microtask), so without this a Worker would see nothing until the run ended.
//
// A MessageChannel message, not setTimeout(0): browsers clamp nested timeouts to 4 ms, which
// per decoded token (~25 ms on the CPU) would cost a sixth of the speed. A fresh channel per
// call, closed on delivery, keeps nothing alive (Node would otherwise wait on an open port).

export function nextTask(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}
