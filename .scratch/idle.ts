let last = performance.now(), worst = 0
const iv = setInterval(() => { const now = performance.now(); worst = Math.max(worst, now - last); last = now }, 1)
setTimeout(() => { clearInterval(iv); console.log('idle worst gap', worst.toFixed(1)) }, 10000)
