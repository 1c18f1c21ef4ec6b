// How the workflows beside this file were made: run in a page of the custom-nodes tier's ComfyUI (the pinned
// frontend with KJNodes, rgthree-comfy and VideoHelperSuite loaded) by author.py; each is app.graph.serialize(),
// the workflow a user saves. The packs' own JavaScript runs as it does for a user: KJNodes' Set/Get callbacks,
// rgthree's group toggles, VHS's format widgets.
async () => {
  const app = window.app, LG = window.LiteGraph;
  const out = {};
  const fresh = () => { app.graph.clear(); };
  const add = (type, pos, widgets = {}, title) => {
    const node = LG.createNode(type);
    if (!node) throw new Error("no node type " + type);
    node.pos = pos;
    app.graph.add(node);
    for (const [name, value] of Object.entries(widgets)) {
      const w = node.widgets.find((w) => w.name === name);
      if (!w) throw new Error(type + " has no widget " + name + ": " + node.widgets.map((w) => w.name));
      w.value = value; w.callback?.(value);
    }
    if (title) node.title = title;
    return node;
  };
  const group = (title, pos, size) => {
    const g = new LG.LGraphGroup(title); g.pos = pos; g.size = size; app.graph.add(g); return g;
  };
  const setter = (name, pos) => { const n = add("SetNode", pos); n.widgets[0].value = name; n.widgets[0].callback(name); return n; };
  const getter = (name, pos) => { const n = add("GetNode", pos); n.widgets[0].value = name; n.onRename(); return n; };
  const save = (key) => { out[key] = JSON.parse(JSON.stringify(app.graph.serialize())); };

  // 1. Set/Get across groups
  fresh();
  group("Source", [0, 0], [400, 300]); group("Use", [500, 0], [900, 600]);
  const empty = add("EmptyImage", [20, 40], {width: 48, height: 32, batch_size: 1, color: 3355443});
  const set1 = setter("picture", [250, 60]); empty.connect(0, set1, 0);
  const get1 = getter("picture", [520, 40]); const inv = add("ImageInvert", [720, 40]);
  get1.connect(0, inv, 0);
  const save1 = add("SaveImage", [950, 40], {filename_prefix: "setget"}); inv.connect(0, save1, 0);
  const get2 = getter("picture", [520, 300]); const save2 = add("SaveImage", [950, 300], {filename_prefix: "setget_plain"});
  get2.connect(0, save2, 0);
  save("setget_across_groups");

  // 2. Set/Get feeding a LoRA chain
  fresh();
  group("Models", [0, 0], [450, 400]); group("LoRAs", [500, 0], [500, 400]); group("Sampling", [0, 450], [1400, 500]);
  const ckpt = add("CheckpointLoaderSimple", [20, 40], {ckpt_name: "sd15.safetensors"});
  const sm = setter("model", [300, 40]); ckpt.connect(0, sm, 0);
  const sc = setter("clip", [300, 120]); ckpt.connect(1, sc, 0);
  const sv = setter("vae", [300, 200]); ckpt.connect(2, sv, 0);
  const gm = getter("model", [520, 40]); const gc = getter("clip", [520, 120]);
  const l1 = add("LoraLoader", [700, 40], {lora_name: "style_a.safetensors", strength_model: 0.8, strength_clip: 0.7});
  gm.connect(0, l1, 0); gc.connect(0, l1, 1);
  const l2 = add("LoraLoader", [700, 250], {lora_name: "detail_b.safetensors", strength_model: 0.5, strength_clip: 0.5});
  l1.connect(0, l2, 0); l1.connect(1, l2, 1);
  const slm = setter("lora_model", [950, 40]); l2.connect(0, slm, 0);
  const slc = setter("lora_clip", [950, 120]); l2.connect(1, slc, 0);
  const pos = add("CLIPTextEncode", [20, 480], {text: "a lighthouse at dusk"});
  const neg = add("CLIPTextEncode", [20, 700], {text: "blurry"});
  getter("lora_clip", [20, 460]).connect(0, pos, 0); getter("lora_clip", [20, 680]).connect(0, neg, 0);
  const latent = add("EmptyLatentImage", [300, 800], {width: 512, height: 512, batch_size: 1});
  const ks = add("KSampler", [500, 480], {seed: 42, steps: 20, cfg: 7, sampler_name: "euler", scheduler: "normal", denoise: 1});
  getter("lora_model", [400, 460]).connect(0, ks, 0); pos.connect(0, ks, 1); neg.connect(0, ks, 2); latent.connect(0, ks, 3);
  const dec = add("VAEDecode", [850, 480]); ks.connect(0, dec, 0); getter("vae", [850, 600]).connect(0, dec, 1);
  const si = add("SaveImage", [1100, 480], {filename_prefix: "lora_chain"}); dec.connect(0, si, 0);
  save("setget_lora_chain");

  // 3. A muted and a bypassed group, toggled with rgthree's Fast Groups Muter / Bypasser
  fresh();
  const chainIn = (title, y, prefix) => {
    group(title, [0, y], [900, 250]);
    const e = add("EmptyImage", [20, y + 40], {width: 16, height: 16, batch_size: 1, color: 255});
    const i = add("ImageInvert", [300, y + 40]); e.connect(0, i, 0);
    const s = add("SaveImage", [550, y + 40], {filename_prefix: prefix}); i.connect(0, s, 0);
    return [e, i, s];
  };
  chainIn("Kept", 0, "kept");
  chainIn("Muted", 300, "muted");
  group("Bypassed", [300, 600], [300, 250]);
  const source = add("EmptyImage", [20, 640], {width: 16, height: 8, batch_size: 1, color: 65280});
  const bypassedInvert = add("ImageInvert", [320, 640]); source.connect(0, bypassedInvert, 0);
  const afterBypass = add("SaveImage", [700, 640], {filename_prefix: "after_bypass"});
  bypassedInvert.connect(0, afterBypass, 0);
  const muter = add("Fast Groups Muter (rgthree)", [1000, 0]);
  const bypasser = add("Fast Groups Bypasser (rgthree)", [1000, 300]);
  for (const g of app.graph._groups) g.recomputeInsideNodes?.();
  muter.refreshWidgets?.(); bypasser.refreshWidgets?.();
  const toggle = (node, title, value) => {
    const w = node.widgets.find((w) => w.label === "Enable " + title || w.name?.endsWith(title));
    if (!w) throw new Error("no toggle for " + title + " in " + node.widgets.map((w) => w.name + "/" + w.label));
    w.toggle(value);
  };
  toggle(muter, "Muted", false);
  toggle(bypasser, "Bypassed", false);
  save("groups_muted_bypassed");

  // 4. Nested reroutes through a Context
  fresh();
  const img = add("EmptyImage", [0, 0], {width: 24, height: 24, batch_size: 1, color: 16711680});
  const r1 = add("Reroute (rgthree)", [250, 20]); img.connect(0, r1, 0);
  const r2 = add("Reroute", [350, 20]); r1.connect(0, r2, 0);
  const r3 = add("Reroute (rgthree)", [450, 20]); r2.connect(0, r3, 0);
  const ctx = add("Context (rgthree)", [550, 0]);
  r3.connect(0, ctx, ctx.inputs.findIndex((i) => i.name === "images"));
  const ctx2 = add("Context (rgthree)", [850, 0]); ctx.connect(0, ctx2, 0);
  const imageOut = ctx2.outputs.findIndex((o) => o.name === "IMAGE");
  const r4 = add("Reroute (rgthree)", [1150, 20]); ctx2.connect(imageOut, r4, 0);
  const r5 = add("Reroute", [1250, 20]); r4.connect(0, r5, 0);
  const inv2 = add("ImageInvert", [1350, 0]); r5.connect(0, inv2, 0);
  const s4 = add("SaveImage", [1600, 0], {filename_prefix: "context"}); inv2.connect(0, s4, 0);
  save("reroutes_through_context");

  // 5. Power Lora Loader: a LoRA on, one off, shown by Display Any (its model input is optional)
  fresh();
  const pll = add("Power Lora Loader (rgthree)", [0, 0]);
  pll.addNewLoraWidget("job_lora.safetensors").value = {on: true, lora: "job_lora.safetensors", strength: 0.75};
  pll.addNewLoraWidget("unused.safetensors").value = {on: false, lora: "unused.safetensors", strength: 1};
  const show = add("Display Any (rgthree)", [400, 0]); pll.connect(0, show, 0);
  save("power_lora_loader");

  // 6. VHS: a job's video in, an h264 video out (format widgets built by VHS's JavaScript)
  fresh();
  const load = add("VHS_LoadVideo", [0, 0], {video: "clip.mp4", frame_load_cap: 8});
  const flip = add("ImageInvert", [400, 0]); load.connect(0, flip, 0);
  const combine = add("VHS_VideoCombine", [700, 0], {frame_rate: 8, filename_prefix: "vhs_job", format: "video/h264-mp4"});
  flip.connect(0, combine, 0);
  const formatWidget = combine.widgets.find((w) => w.name === "format"); formatWidget.callback?.(formatWidget.value);
  save("vhs_load_combine");
  return out;
}
