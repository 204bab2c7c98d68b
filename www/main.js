// Entry point of the page. It only reports WebGPU availability until the wasm module lands.
const status = document.getElementById('status');
if (!('gpu' in navigator)) {
  status.insertAdjacentHTML('beforeend', ' <strong>WebGPU is not available in this browser.</strong>');
}
