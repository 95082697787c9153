// clients.mjs - the official `openai` npm client against `voxtral serve`
// (tests/test_server.sh). Prints one JSON object on stdout.
//   node clients.mjs files BASE_URL KEY WAV FORMATS...   audio.transcriptions.create per format,
//                                                         then once with stream: true
//   node clients.mjs realtime BASE_URL KEY WAV24K        OpenAIRealtimeWS (wss://, self-signed
//                                                         cert), transcription intent, PCM16 24 kHz
import fs from 'node:fs';
import OpenAI, { toFile } from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

const [mode, baseURL, apiKey, wav, ...rest] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });

function pcmOfWav(path) {
  const b = fs.readFileSync(path);
  let off = 12;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4), size = b.readUInt32LE(off + 4);
    if (id === 'data') return b.subarray(off + 8, off + 8 + size);
    off += 8 + size + (size & 1);
  }
  throw new Error('no data chunk');
}

async function files() {
  const out = {};
  for (const fmt of rest) {
    const r = await client.audio.transcriptions.create({
      file: fs.createReadStream(wav), model: 'voxtral', response_format: fmt,
      ...(fmt === 'verbose_json' ? { timestamp_granularities: ['segment', 'word'] } : {}),
    });
    out[fmt] = r;
  }
  const stream = await client.audio.transcriptions.create({
    file: await toFile(fs.readFileSync(wav), 'a.wav'), model: 'voxtral', stream: true,
  });
  let deltas = '', done = null;
  for await (const ev of stream) {
    if (ev.type === 'transcript.text.delta') deltas += ev.delta;
    else if (ev.type === 'transcript.text.done') done = ev.text;
  }
  out.stream = { deltas, done };
  console.log(JSON.stringify(out));
}

async function realtime() {
  const pcm = pcmOfWav(wav);
  const rt = new OpenAIRealtimeWS({ intent: 'transcription', options: { rejectUnauthorized: false } }, client);
  const res = { deltas: '', completed: [], events: [] };
  const finished = new Promise((resolve, reject) => {
    rt.on('error', (e) => reject(e));
    rt.on('conversation.item.input_audio_transcription.delta', (e) => { res.deltas += e.delta; });
    rt.on('conversation.item.input_audio_transcription.completed', (e) => { res.completed.push(e.transcript); resolve(); });
    rt.on('event', (e) => res.events.push(e.type));
  });
  await new Promise((resolve, reject) => { rt.socket.on('open', resolve); rt.socket.on('error', reject); });
  rt.send({ type: 'session.update', session: { type: 'transcription',
    audio: { input: { format: { type: 'audio/pcm', rate: 24000 } } } } });
  for (let off = 0; off < pcm.length; off += 4800) // 100 ms chunks
    rt.send({ type: 'input_audio_buffer.append', audio: pcm.subarray(off, off + 4800).toString('base64') });
  rt.send({ type: 'input_audio_buffer.commit' });
  await finished;
  rt.close();
  console.log(JSON.stringify(res));
}

(mode === 'files' ? files() : realtime()).catch((e) => {
  console.log(JSON.stringify({ error: String(e && (e.stack || e.message) || e) }));
  process.exit(1);
});
