<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="zh_CN">
    <context>
        <name>ExportPage</name>
        <message>
            <source>Export</source>
            <translation>导出</translation>
        </message>
        <message>
            <source>GGUF (llama.cpp)</source>
            <translation>GGUF（llama.cpp）</translation>
        </message>
        <message>
            <source>GPTQ safetensors (vLLM)</source>
            <translation>GPTQ safetensors（vLLM）</translation>
        </message>
        <message>
            <source>compressed-tensors (transformers, vLLM)</source>
            <translation>compressed-tensors（transformers、vLLM）</translation>
        </message>
        <message>
            <source>BF16 safetensors (dense)</source>
            <translation>BF16 safetensors（稠密）</translation>
        </message>
        <message>
            <source>exact (the checkpoint's own codes)</source>
            <translation>精确（检查点自身的编码）</translation>
        </message>
        <message>
            <source>none</source>
            <translation>无</translation>
        </message>
        <message>
            <source>Format</source>
            <translation>格式</translation>
        </message>
        <message>
            <source>GGUF type</source>
            <translation>GGUF 类型</translation>
        </message>
        <message>
            <source>Importance matrix</source>
            <translation>重要性矩阵</translation>
        </message>
        <message>
            <source>llama.cpp's types: qdesk computes the matrix from this calibration set and writes it beside the file</source>
            <translation>llama.cpp 的类型：qdesk 用这个校准集计算矩阵，并写在文件旁边</translation>
        </message>
        <message>
            <source>Output</source>
            <translation>输出</translation>
        </message>
        <message>
            <source>Browse…</source>
            <translation>浏览…</translation>
        </message>
        <message>
            <source>Re-quantize already quantized weights</source>
            <translation>重新量化已量化的权重</translation>
        </message>
        <message>
            <source>A second rounding on top of the first; exact keeps a checkpoint's own weights</source>
            <translation>在第一次舍入之上再舍入一次；精确导出保留检查点自身的权重</translation>
        </message>
        <message>
            <source>Verify: reopen the file and compare it on held-out text</source>
            <translation>验证：重新打开文件，在留出文本上比较</translation>
        </message>
        <message>
            <source>Write the file (Ctrl+R)</source>
            <translation>写出文件（Ctrl+R）</translation>
        </message>
        <message>
            <source>Cancel</source>
            <translation>取消</translation>
        </message>
        <message>
            <source>Stop; nothing is left on disk (Esc)</source>
            <translation>停止；磁盘上不留下任何文件（Esc）</translation>
        </message>
        <message>
            <source>Select a model in the sidebar (the demo model works offline).</source>
            <translation>请在侧栏选择一个模型（演示模型可离线使用）。</translation>
        </message>
        <message>
            <source>{name} is not loaded yet.</source>
            <translation>{name} 尚未加载。</translation>
        </message>
        <message>
            <source>{name} runs on llama.cpp; exports start from the transformers backend (load it with backend transformers).</source>
            <translation>{name} 运行在 llama.cpp 上；导出从 transformers 后端开始（请用 transformers 后端加载）。</translation>
        </message>
        <message>
            <source>quantized</source>
            <translation>已量化</translation>
        </message>
        <message>
            <source>dense</source>
            <translation>稠密</translation>
        </message>
        <message>
            <source>Model: &lt;b&gt;{name}&lt;/b&gt; · {what} · {params}M parameters</source>
            <translation>模型：&lt;b&gt;{name}&lt;/b&gt; · {what} · {params}M 参数</translation>
        </message>
        <message>
            <source>Q4_0 / Q5_0 / Q8_0 blocks built from the checkpoint's codes and scales: llama.cpp runs exactly qdesk's weights.</source>
            <translation>由检查点的编码和缩放构建 Q4_0 / Q5_0 / Q8_0 块：llama.cpp 运行的正是 qdesk 的权重。</translation>
        </message>
        <message>
            <source>llama.cpp's own converter, tokenizer and chat template carried over.</source>
            <translation>使用 llama.cpp 自己的转换器，分词器和对话模板一并带上。</translation>
        </message>
        <message>
            <source>llama.cpp's quantizer in a separate process (a crash cannot take the app down); sizes below 256-wide rows fall back to other types.</source>
            <translation>llama.cpp 的量化器在独立进程中运行（崩溃不会拖垮应用）；行宽不足 256 的张量退回到其他类型。</translation>
        </message>
        <message>
            <source>For vLLM: symmetric 4- or 8-bit checkpoints, groups of 32, 64, 128 or per channel.</source>
            <translation>用于 vLLM：对称 4 位或 8 位检查点，分组为 32、64、128 或按通道。</translation>
        </message>
        <message>
            <source>The qdesk checkpoint as it is: transformers and vLLM load it.</source>
            <translation>原样的 qdesk 检查点：transformers 和 vLLM 都能加载。</translation>
        </message>
        <message>
            <source>Dense bfloat16 weights in shards with an index.</source>
            <translation>分片并带索引的稠密 bfloat16 权重。</translation>
        </message>
        <message>
            <source>The model is already quantized: tick re-quantize to round it again, or choose exact.</source>
            <translation>该模型已量化：勾选重新量化以再次舍入，或选择精确导出。</translation>
        </message>
        <message>
            <source>Export to</source>
            <translation>导出到</translation>
        </message>
        <message>
            <source>GGUF files (*.gguf)</source>
            <translation>GGUF 文件 (*.gguf)</translation>
        </message>
        <message>
            <source>Export into a new folder</source>
            <translation>导出到新文件夹</translation>
        </message>
        <message>
            <source>choose where to write the export</source>
            <translation>请选择导出的位置</translation>
        </message>
        <message>
            <source>Replace the export?</source>
            <translation>替换该导出？</translation>
        </message>
        <message>
            <source>{path} is a previous qdesk export. Replace it?</source>
            <translation>{path} 是之前的 qdesk 导出。要替换它吗？</translation>
        </message>
        <message>
            <source>Cannot export</source>
            <translation>无法导出</translation>
        </message>
        <message>
            <source>Exporting {name}</source>
            <translation>正在导出 {name}</translation>
        </message>
        <message>
            <source>cancelling…</source>
            <translation>正在取消…</translation>
        </message>
        <message>
            <source>dequantizing the checkpoint</source>
            <translation>正在反量化检查点</translation>
        </message>
        <message>
            <source>llama.cpp's converter</source>
            <translation>llama.cpp 的转换器</translation>
        </message>
        <message>
            <source>matching tensors to layers</source>
            <translation>正在把张量对应到层</translation>
        </message>
        <message>
            <source>computing the importance matrix</source>
            <translation>正在计算重要性矩阵</translation>
        </message>
        <message>
            <source>llama.cpp's quantizer</source>
            <translation>llama.cpp 的量化器</translation>
        </message>
        <message>
            <source>writing</source>
            <translation>正在写入</translation>
        </message>
        <message>
            <source>checking the written weights</source>
            <translation>正在检查写入的权重</translation>
        </message>
        <message>
            <source>verifying in the consumer</source>
            <translation>正在目标程序中验证</translation>
        </message>
        <message>
            <source>starting {target}</source>
            <translation>开始 {target}</translation>
        </message>
        <message>
            <source>llama.cpp's quantizer started ({type})</source>
            <translation>llama.cpp 的量化器已启动（{type}）</translation>
        </message>
        <message>
            <source>verified</source>
            <translation>已验证</translation>
        </message>
        <message>
            <source>Done.</source>
            <translation>完成。</translation>
        </message>
        <message>
            <source>Failed: {reason}</source>
            <translation>失败：{reason}</translation>
        </message>
        <message>
            <source>Cancelled: nothing was written.</source>
            <translation>已取消：没有写入任何文件。</translation>
        </message>
        <message>
            <source>&lt;b&gt;{path}&lt;/b&gt; · {size} MiB · {bpw} bits per weight · {s} s</source>
            <translation>&lt;b&gt;{path}&lt;/b&gt; · {size} MiB · 每权重 {bpw} 位 · {s} 秒</translation>
        </message>
        <message>
            <source>tensor types: {types}</source>
            <translation>张量类型：{types}</translation>
        </message>
        <message>
            <source>importance matrix: {path}</source>
            <translation>重要性矩阵：{path}</translation>
        </message>
        <message>
            <source>note: {text}</source>
            <translation>注：{text}</translation>
        </message>
        <message>
            <source>Not verified.</source>
            <translation>未验证。</translation>
        </message>
        <message>
            <source>Verified in {consumer} against the in-memory model ({windows} × {ctx} tokens of {text}): mean KLD &lt;b&gt;{kld}&lt;/b&gt;, same top p &lt;b&gt;{same}%&lt;/b&gt;, PPL ratio {ppl}.</source>
            <translation>已在 {consumer} 中与内存中的模型对比验证（{text} 的 {windows} × {ctx} 个词元）：平均 KLD &lt;b&gt;{kld}&lt;/b&gt;，首选相同 &lt;b&gt;{same}%&lt;/b&gt;，困惑度比 {ppl}。</translation>
        </message>
        <message>
            <source>The file's weights are qdesk's, bit for bit.</source>
            <translation>文件中的权重与 qdesk 的逐位相同。</translation>
        </message>
        <message>
            <source>The file's weights differ from qdesk's (rounded scales).</source>
            <translation>文件中的权重与 qdesk 的不同（缩放被舍入）。</translation>
        </message>
        <message>
            <source>Within the exact-export bound.</source>
            <translation>在精确导出的界限之内。</translation>
        </message>
        <message>
            <source>Outside the exact-export bound (mean KLD &lt; 0.001, same top p ≥ 99%): llama.cpp rounds activations to 8 bits in quantized matrix products.</source>
            <translation>超出精确导出的界限（平均 KLD &lt; 0.001，首选相同 ≥ 99%）：llama.cpp 在量化矩阵乘法中把激活舍入到 8 位。</translation>
        </message>
    </context>
    <context>
        <name>TokenView</name>
        <message>
            <source>token {i}</source>
            <translation>第 {i} 个词元</translation>
        </message>
        <message>
            <source>margin {m:.3f} · entropy {h:.2f} nats · p {p:.3f}</source>
            <translation>差值 {m:.3f} · 熵 {h:.2f} 奈特 · p {p:.3f}</translation>
        </message>
        <message>
            <source>this model</source>
            <translation>本模型</translation>
        </message>
        <message>
            <source>reference, same prefix</source>
            <translation>参考模型（同一前缀）</translation>
        </message>
        <message>
            <source>&lt;b style='color:{c}'&gt;flip&lt;/b&gt; · </source>
            <translation>&lt;b style='color:{c}'&gt;翻转&lt;/b&gt; · </translation>
        </message>
        <message>
            <source>KLD {k:.4f} · Δp {dp:+.3f} · reference margin {m:.3f}</source>
            <translation>KLD {k:.4f} · Δp {dp:+.3f} · 参考差值 {m:.3f}</translation>
        </message>
    </context>
    <context>
        <name>ChatPage</name>
        <message>
            <source>Chat</source>
            <translation>对话</translation>
        </message>
        <message>
            <source>Panes:</source>
            <translation>窗格：</translation>
        </message>
        <message>
            <source>The model of each pane; the first is the reference.</source>
            <translation>每个窗格的模型；第一个是参考模型。</translation>
        </message>
        <message>
            <source>A message to every pane… (Ctrl+Enter sends)</source>
            <translation>发给所有窗格的消息…（Ctrl+Enter 发送）</translation>
        </message>
        <message>
            <source>Send</source>
            <translation>发送</translation>
        </message>
        <message>
            <source>Stop</source>
            <translation>停止</translation>
        </message>
        <message>
            <source>End every pane's reply at its next token (kept).</source>
            <translation>在下一个词元处结束所有窗格的回复（已生成的保留）。</translation>
        </message>
        <message>
            <source>Regenerate</source>
            <translation>重新生成</translation>
        </message>
        <message>
            <source>Answer the last message again in every pane (the next seed); the earlier replies stay as versions.</source>
            <translation>在每个窗格中重新回答最后一条消息（使用下一个种子）；之前的回复作为版本保留。</translation>
        </message>
        <message>
            <source>New chat</source>
            <translation>新对话</translation>
        </message>
        <message>
            <source>Plain text</source>
            <translation>纯文本</translation>
        </message>
        <message>
            <source>Show the replies without margin colours and flip marks.</source>
            <translation>显示不带差值颜色和翻转标记的回复。</translation>
        </message>
        <message>
            <source>Conversation</source>
            <translation>对话文件</translation>
        </message>
        <message>
            <source>Save, load and export the conversation and its graphs.</source>
            <translation>保存、加载和导出对话及其图表。</translation>
        </message>
        <message>
            <source>Save with every token's statistics (JSON)…</source>
            <translation>连同每个词元的统计保存（JSON）…</translation>
        </message>
        <message>
            <source>Load a saved conversation…</source>
            <translation>加载已保存的对话…</translation>
        </message>
        <message>
            <source>Export as Markdown…</source>
            <translation>导出为 Markdown…</translation>
        </message>
        <message>
            <source>Save the graphs as PNG…</source>
            <translation>将图表保存为 PNG…</translation>
        </message>
        <message>
            <source>Save the graphs' numbers as CSV…</source>
            <translation>将图表数据保存为 CSV…</translation>
        </message>
        <message>
            <source>A loaded model for this pane (— for none).</source>
            <translation>此窗格使用的已加载模型（— 表示无）。</translation>
        </message>
        <message>
            <source>Stop the running reply before changing the models.</source>
            <translation>更换模型前请先停止正在生成的回复。</translation>
        </message>
        <message>
            <source>A model can be in one pane only: load it once more for another pane.</source>
            <translation>一个模型只能用于一个窗格：若要用于另一个窗格，请再加载一次。</translation>
        </message>
        <message>
            <source>pane {n}</source>
            <translation>窗格 {n}</translation>
        </message>
        <message>
            <source>the model was unloaded</source>
            <translation>模型已被卸载</translation>
        </message>
        <message>
            <source>Choose a loaded model for every pane first.</source>
            <translation>请先为每个窗格选择一个已加载的模型。</translation>
        </message>
        <message>
            <source>Continue from another token</source>
            <translation>从另一个词元继续</translation>
        </message>
        <message>
            <source>Following the reference needs two or more panes.</source>
            <translation>跟随参考模型需要两个或更多窗格。</translation>
        </message>
        <message>
            <source>Follow the reference</source>
            <translation>跟随参考模型</translation>
        </message>
        <message>
            <source>{model} is in use by “{job}”. Wait for it to finish or cancel it first.</source>
            <translation>{model} 正被“{job}”使用。请等待其完成或先取消它。</translation>
        </message>
        <message>
            <source>Busy</source>
            <translation>忙碌</translation>
        </message>
        <message>
            <source>chatting with {names}</source>
            <translation>正在与 {names} 对话</translation>
        </message>
        <message>
            <source>Stopped: {why}</source>
            <translation>已停止：{why}</translation>
        </message>
        <message>
            <source>A model was unloaded; choose the panes' models again to go on.</source>
            <translation>有模型已被卸载；请重新为窗格选择模型后继续。</translation>
        </message>
        <message>
            <source>saved conversation (model not loaded)</source>
            <translation>已保存的对话（模型未加载）</translation>
        </message>
        <message>
            <source>{n} tokens</source>
            <translation>{n} 个词元</translation>
        </message>
        <message>
            <source>end</source>
            <translation>结束</translation>
        </message>
        <message>
            <source>at the limit</source>
            <translation>达到上限</translation>
        </message>
        <message>
            <source>stop string</source>
            <translation>停止串</translation>
        </message>
        <message>
            <source>stopped</source>
            <translation>已停止</translation>
        </message>
        <message>
            <source>flips {f} ({r:.1f}%)</source>
            <translation>翻转 {f} 次（{r:.1f}%）</translation>
        </message>
        <message>
            <source>mean KLD {k:.4f}</source>
            <translation>平均 KLD {k:.4f}</translation>
        </message>
        <message>
            <source>paths part at token {i}</source>
            <translation>在第 {i} 个词元处分叉</translation>
        </message>
        <message>
            <source>regenerated</source>
            <translation>重新生成</translation>
        </message>
        <message>
            <source>another token at {i}</source>
            <translation>在第 {i} 个词元处换了词元</translation>
        </message>
        <message>
            <source>follows the reference at {i}</source>
            <translation>在第 {i} 个词元处跟随参考模型</translation>
        </message>
        <message>
            <source>The reference's reply scored under this model: mean KLD {k:.4f}, same top-1 {s:.1f}%</source>
            <translation>用本模型为参考模型的回复打分：平均 KLD {k:.4f}，首选相同 {s:.1f}%</translation>
        </message>
        <message>
            <source>Save the conversation</source>
            <translation>保存对话</translation>
        </message>
        <message>
            <source>Load a conversation</source>
            <translation>加载对话</translation>
        </message>
        <message>
            <source>Export as Markdown</source>
            <translation>导出为 Markdown</translation>
        </message>
        <message>
            <source>Save the graphs as PNG</source>
            <translation>将图表保存为 PNG</translation>
        </message>
        <message>
            <source>Save the graphs' data as CSV</source>
            <translation>将图表数据保存为 CSV</translation>
        </message>
        <message>
            <source>Loaded {path}</source>
            <translation>已加载 {path}</translation>
        </message>
        <message>
            <source>Wrote {path}</source>
            <translation>已写入 {path}</translation>
        </message>
        <message>
            <source>There is no conversation to save yet.</source>
            <translation>还没有可保存的对话。</translation>
        </message>
        <message>
            <source>Wait for the reply to finish (or Stop it) first.</source>
            <translation>请先等待回复完成（或停止它）。</translation>
        </message>
    </context>
    <context>
        <name>ComparePage</name>
        <message>
            <source>Compare</source>
            <translation>比较</translation>
        </message>
        <message>
            <source>Reference</source>
            <translation>参考模型</translation>
        </message>
        <message>
            <source>The model the others are measured against.</source>
            <translation>其他模型与之比较的模型。</translation>
        </message>
        <message>
            <source>Models</source>
            <translation>模型</translation>
        </message>
        <message>
            <source>The models to compare (they must share its vocabulary).</source>
            <translation>要比较的模型（必须与参考模型使用同一词表）。</translation>
        </message>
        <message>
            <source>Text</source>
            <translation>文本</translation>
        </message>
        <message>
            <source>Held-out prose (never used for calibration) or your file.</source>
            <translation>留出文本（从未用于校准）或你的文件。</translation>
        </message>
        <message>
            <source>Context</source>
            <translation>上下文</translation>
        </message>
        <message>
            <source>Tokens per window; the second half of each is scored.</source>
            <translation>每个窗口的词元数；对每个窗口的后一半打分。</translation>
        </message>
        <message>
            <source>Windows</source>
            <translation>窗口数</translation>
        </message>
        <message>
            <source>At most this many windows (0 = the whole text).</source>
            <translation>最多使用这么多窗口（0 = 整个文本）。</translation>
        </message>
        <message>
            <source>Divergence on a text</source>
            <translation>文本上的差异</translation>
        </message>
        <message>
            <source>Reply lengths on prompts</source>
            <translation>提示集上的回复长度</translation>
        </message>
        <message>
            <source>Prompts</source>
            <translation>提示集</translation>
        </message>
        <message>
            <source>Max new tokens</source>
            <translation>最多新词元</translation>
        </message>
        <message>
            <source>Run</source>
            <translation>运行</translation>
        </message>
        <message>
            <source>Cancel</source>
            <translation>取消</translation>
        </message>
        <message>
            <source>Run the reply-length study</source>
            <translation>运行回复长度研究</translation>
        </message>
        <message>
            <source>Every model answers every prompt (greedy); mean and median reply tokens with bootstrap 95% intervals, the paired difference to the reference, the share that hits the limit, and accuracy on reasoning prompts.</source>
            <translation>每个模型回答每个提示（贪心解码）；给出回复词元数的均值和中位数及自助法 95% 区间、与参考模型的配对差、达到上限的比例，以及推理题的正确率。</translation>
        </message>
        <message>
            <source>Save JSON…</source>
            <translation>保存 JSON…</translation>
        </message>
        <message>
            <source>Report HTML…</source>
            <translation>HTML 报告…</translation>
        </message>
        <message>
            <source>One HTML file: the tables and the plots.</source>
            <translation>一个 HTML 文件：包含表格和图表。</translation>
        </message>
        <message>
            <source>Divergence</source>
            <translation>差异</translation>
        </message>
        <message>
            <source>Reply lengths</source>
            <translation>回复长度</translation>
        </message>
        <message>
            <source>held-out English + Chinese</source>
            <translation>留出英文 + 中文</translation>
        </message>
        <message>
            <source>held-out English</source>
            <translation>留出英文</translation>
        </message>
        <message>
            <source>held-out Chinese</source>
            <translation>留出中文</translation>
        </message>
        <message>
            <source>A file…</source>
            <translation>文件…</translation>
        </message>
        <message>
            <source>A UTF-8 text file</source>
            <translation>UTF-8 文本文件</translation>
        </message>
        <message>
            <source>Prompts: one a line, or .jsonl</source>
            <translation>提示：每行一个，或 .jsonl</translation>
        </message>
        <message>
            <source>Choose a loaded reference model.</source>
            <translation>请选择一个已加载的参考模型。</translation>
        </message>
        <message>
            <source>Choose at least one model to compare.</source>
            <translation>请至少选择一个要比较的模型。</translation>
        </message>
        <message>
            <source>No chosen model shares the reference's vocabulary.</source>
            <translation>所选模型都不与参考模型使用同一词表。</translation>
        </message>
        <message>
            <source>Skipped (another vocabulary): {names}</source>
            <translation>已跳过（词表不同）：{names}</translation>
        </message>
        <message>
            <source>Comparing with {name}</source>
            <translation>正在与 {name} 比较</translation>
        </message>
        <message>
            <source>a model is busy</source>
            <translation>有模型正忙</translation>
        </message>
        <message>
            <source>window</source>
            <translation>窗口</translation>
        </message>
        <message>
            <source>reply</source>
            <translation>回复</translation>
        </message>
        <message>
            <source>Cancelled.</source>
            <translation>已取消。</translation>
        </message>
        <message>
            <source>{n} windows of {ctx} tokens, {t} tokens scored.</source>
            <translation>{n} 个窗口，每个 {ctx} 个词元，共打分 {t} 个词元。</translation>
        </message>
        <message>
            <source>{n} replies.</source>
            <translation>{n} 条回复。</translation>
        </message>
        <message>
            <source>model</source>
            <translation>模型</translation>
        </message>
        <message>
            <source>category</source>
            <translation>类别</translation>
        </message>
        <message>
            <source>replies</source>
            <translation>回复数</translation>
        </message>
        <message>
            <source>mean tokens [95%]</source>
            <translation>平均词元数 [95%]</translation>
        </message>
        <message>
            <source>median [95%]</source>
            <translation>中位数 [95%]</translation>
        </message>
        <message>
            <source>minus reference [95%]</source>
            <translation>减去参考 [95%]</translation>
        </message>
        <message>
            <source>at limit</source>
            <translation>达到上限</translation>
        </message>
        <message>
            <source>accuracy [95%]</source>
            <translation>正确率 [95%]</translation>
        </message>
        <message>
            <source>Save the results</source>
            <translation>保存结果</translation>
        </message>
        <message>
            <source>There are no results yet.</source>
            <translation>还没有结果。</translation>
        </message>
        <message>
            <source>Wrote {path}</source>
            <translation>已写入 {path}</translation>
        </message>
    </context>
    <context>
        <name>FlipRatePlot</name>
        <message>
            <source>flip rate by the reference's margin p1−p2</source>
            <translation>按参考模型差值 p1−p2 分组的翻转率</translation>
        </message>
        <message>
            <source>flip rate (%)</source>
            <translation>翻转率（%）</translation>
        </message>
        <message>
            <source>reference margin, from</source>
            <translation>参考差值（区间起点）</translation>
        </message>
    </context>
    <context>
        <name>Inspector</name>
        <message>
            <source>How many of the most likely tokens the bars show (5–20).</source>
            <translation>条形图显示多少个最可能的词元（5–20）。</translation>
        </message>
        <message>
            <source>Close</source>
            <translation>关闭</translation>
        </message>
        <message>
            <source>Top</source>
            <translation>前</translation>
        </message>
        <message>
            <source>this model</source>
            <translation>本模型</translation>
        </message>
        <message>
            <source>reference, same prefix</source>
            <translation>参考模型（同一前缀）</translation>
        </message>
        <message>
            <source>Margin p1−p2</source>
            <translation>差值 p1−p2</translation>
        </message>
        <message>
            <source>This model's top-1 minus top-2 probability.</source>
            <translation>本模型第一与第二候选的概率之差。</translation>
        </message>
        <message>
            <source>Entropy</source>
            <translation>熵</translation>
        </message>
        <message>
            <source>Of this model's distribution, in nats.</source>
            <translation>本模型分布的熵，单位奈特。</translation>
        </message>
        <message>
            <source>p(token)</source>
            <translation>p(词元)</translation>
        </message>
        <message>
            <source>This model's probability of the chosen token.</source>
            <translation>本模型给所选词元的概率。</translation>
        </message>
        <message>
            <source>Reference margin</source>
            <translation>参考差值</translation>
        </message>
        <message>
            <source>The reference's top-1 minus top-2 on the same prefix.</source>
            <translation>参考模型在同一前缀上第一与第二候选的概率之差。</translation>
        </message>
        <message>
            <source>KLD</source>
            <translation>KLD</translation>
        </message>
        <message>
            <source>KL(reference ‖ this model) over the whole vocabulary, nats.</source>
            <translation>整个词表上的 KL(参考 ‖ 本模型)，单位奈特。</translation>
        </message>
        <message>
            <source>Δp</source>
            <translation>Δp</translation>
        </message>
        <message>
            <source>This model's minus the reference's probability of the chosen token.</source>
            <translation>本模型与参考模型给所选词元的概率之差。</translation>
        </message>
        <message>
            <source>A token this model could have taken here.</source>
            <translation>本模型在此处可能选择的词元。</translation>
        </message>
        <message>
            <source>Continue from this token</source>
            <translation>从这个词元继续</translation>
        </message>
        <message>
            <source>Regenerate the rest of this pane's reply from the chosen alternative; the current reply is kept as a version you can switch back to.</source>
            <translation>从所选的候选词元重新生成此窗格回复的其余部分；当前回复作为可切换回来的版本保留。</translation>
        </message>
        <message>
            <source>Follow the reference</source>
            <translation>跟随参考模型</translation>
        </message>
        <message>
            <source>Force this pane onto the reference's token here and continue: does this one flip explain everything after it?</source>
            <translation>在此处强制此窗格采用参考模型的词元并继续：这一次翻转能否解释其后的一切？</translation>
        </message>
        <message>
            <source>{name}, token {i}</source>
            <translation>{name}，第 {i} 个词元</translation>
        </message>
        <message>
            <source>token {i}</source>
            <translation>第 {i} 个词元</translation>
        </message>
        <message>
            <source>No reference statistics for this pane.</source>
            <translation>此窗格没有参考模型统计。</translation>
        </message>
        <message>
            <source>Flip: the reference's top-1 here is {t}.</source>
            <translation>翻转：参考模型在此处的首选是 {t}。</translation>
        </message>
        <message>
            <source>Branching needs the pane's model and the last turn, with no reply running.</source>
            <translation>分支需要此窗格的模型、位于最后一轮，且没有正在生成的回复。</translation>
        </message>
    </context>
    <context>
        <name>KldPercentilePlot</name>
        <message>
            <source>KLD percentiles</source>
            <translation>KLD 百分位数</translation>
        </message>
        <message>
            <source>percentile</source>
            <translation>百分位</translation>
        </message>
        <message>
            <source>KLD (nats, log)</source>
            <translation>KLD（奈特，对数）</translation>
        </message>
    </context>
    <context>
        <name>MarginLegend</name>
        <message>
            <source>Margin p1−p2:</source>
            <translation>差值 p1−p2：</translation>
        </message>
        <message>
            <source>The gap between the model's two most likely tokens. A small gap is a near tie: a little quantization error can change the choice there.</source>
            <translation>模型两个最可能词元之间的概率差。差值小表示几乎持平：一点量化误差就可能改变那里的选择。</translation>
        </message>
        <message>
            <source>flip</source>
            <translation>翻转</translation>
        </message>
        <message>
            <source>This model's top-1 differs from the reference's on the same prefix.</source>
            <translation>在同一前缀上，本模型的首选与参考模型不同。</translation>
        </message>
    </context>
    <context>
        <name>PaneView</name>
        <message>
            <source>int8 act</source>
            <translation>int8 激活</translation>
        </message>
        <message>
            <source>Decode tokens per second and time to the first token.</source>
            <translation>每秒解码词元数和首个词元的用时。</translation>
        </message>
        <message>
            <source>Make this pane the reference</source>
            <translation>将此窗格设为参考模型</translation>
        </message>
        <message>
            <source>Widen this pane (again: back to equal widths)</source>
            <translation>加宽此窗格（再按一次：恢复等宽）</translation>
        </message>
        <message>
            <source>Show only this pane (again: show all)</source>
            <translation>只显示此窗格（再按一次：全部显示）</translation>
        </message>
        <message>
            <source>The previous version of this reply</source>
            <translation>此回复的上一个版本</translation>
        </message>
        <message>
            <source>The next version of this reply</source>
            <translation>此回复的下一个版本</translation>
        </message>
        <message>
            <source> (reference)</source>
            <translation>（参考）</translation>
        </message>
        <message>
            <source>dense</source>
            <translation>稠密</translation>
        </message>
        <message>
            <source>{v:.1f} tok/s</source>
            <translation>{v:.1f} 词元/秒</translation>
        </message>
        <message>
            <source>TTFT {v:.2f}s</source>
            <translation>首词元 {v:.2f} 秒</translation>
        </message>
    </context>
    <context>
        <name>QualitySizePlot</name>
        <message>
            <source>quality vs size (this reference)</source>
            <translation>质量与大小（相对此参考模型）</translation>
        </message>
        <message>
            <source>bits per weight</source>
            <translation>每权重比特数</translation>
        </message>
        <message>
            <source>mean KLD (log)</source>
            <translation>平均 KLD（对数）</translation>
        </message>
    </context>
    <context>
        <name>ReplyGraphs</name>
        <message>
            <source>tokens per reply</source>
            <translation>每条回复的词元数</translation>
        </message>
        <message>
            <source>margin p1−p2 per token, flips ◆</source>
            <translation>每个词元的差值 p1−p2，翻转 ◆</translation>
        </message>
        <message>
            <source>KLD per token</source>
            <translation>每个词元的 KLD</translation>
        </message>
        <message>
            <source>token</source>
            <translation>词元</translation>
        </message>
        <message>
            <source> (reference)</source>
            <translation>（参考）</translation>
        </message>
    </context>
    <context>
        <name>ReplyLengthPlot</name>
        <message>
            <source>mean reply tokens, 95% interval</source>
            <translation>平均回复词元数，95% 区间</translation>
        </message>
        <message>
            <source>tokens</source>
            <translation>词元数</translation>
        </message>
    </context>
    <context>
        <name>SamplingControls</name>
        <message>
            <source>T</source>
            <translation>温度</translation>
        </message>
        <message>
            <source>Temperature; 0 picks the most likely token (greedy).</source>
            <translation>温度；0 表示总选最可能的词元（贪心）。</translation>
        </message>
        <message>
            <source>top-p</source>
            <translation>top-p</translation>
        </message>
        <message>
            <source>Sample only from the most likely tokens whose probabilities add up to this (1 = off).</source>
            <translation>只从概率累计达到此值的最可能词元中采样（1 = 关闭）。</translation>
        </message>
        <message>
            <source>top-k</source>
            <translation>top-k</translation>
        </message>
        <message>
            <source>Sample only from this many most likely tokens (0 = off).</source>
            <translation>只从这么多个最可能的词元中采样（0 = 关闭）。</translation>
        </message>
        <message>
            <source>rep.</source>
            <translation>重复</translation>
        </message>
        <message>
            <source>Repetition penalty: above 1 makes tokens already seen less likely (1 = off).</source>
            <translation>重复惩罚：大于 1 会降低已出现词元的概率（1 = 关闭）。</translation>
        </message>
        <message>
            <source>seed</source>
            <translation>种子</translation>
        </message>
        <message>
            <source>The same seed and settings give the same replies.</source>
            <translation>相同的种子和设置给出相同的回复。</translation>
        </message>
        <message>
            <source>max</source>
            <translation>最多</translation>
        </message>
        <message>
            <source>At most this many new tokens per reply.</source>
            <translation>每条回复最多这么多个新词元。</translation>
        </message>
        <message>
            <source>system</source>
            <translation>系统</translation>
        </message>
        <message>
            <source>The system prompt every pane gets (empty: none).</source>
            <translation>每个窗格都会收到的系统提示（空 = 无）。</translation>
        </message>
        <message>
            <source>system prompt (optional)</source>
            <translation>系统提示（可选）</translation>
        </message>
    </context>
    <context>
        <name>DownloadDialog</name>
        <message>
            <source>Downloading</source>
            <translation>正在下载</translation>
        </message>
        <message>
            <source>Downloading {name} from the Hugging Face hub</source>
            <translation>正在从 Hugging Face Hub 下载 {name}</translation>
        </message>
        <message>
            <source>{done} of {total}</source>
            <translation>{done} / {total}</translation>
        </message>
        <message>
            <source>{speed}/s</source>
            <translation>{speed}/秒</translation>
        </message>
        <message>
            <source>{eta} left</source>
            <translation>剩余 {eta}</translation>
        </message>
        <message>
            <source>connecting…</source>
            <translation>正在连接…</translation>
        </message>
        <message>
            <source>cancelling…</source>
            <translation>正在取消…</translation>
        </message>
    </context>
    <context>
        <name>Formatting</name>
        <message>
            <source>int8 activations (approximate)</source>
            <translation>int8 激活（近似）</translation>
        </message>
        <message>
            <source>{n} GiB</source>
            <translation>{n} GiB</translation>
        </message>
        <message>
            <source>{n} MiB</source>
            <translation>{n} MiB</translation>
        </message>
        <message>
            <source>per channel</source>
            <translation>逐通道</translation>
        </message>
        <message>
            <source>{bits}-bit</source>
            <translation>{bits} 位</translation>
        </message>
        <message>
            <source>sym</source>
            <translation>对称</translation>
        </message>
        <message>
            <source>asym</source>
            <translation>非对称</translation>
        </message>
        <message>
            <source>plan {plan}</source>
            <translation>方案 {plan}</translation>
        </message>
        <message>
            <source>mean KLD {v}</source>
            <translation>平均 KLD {v}</translation>
        </message>
        <message>
            <source>same top p {v}%</source>
            <translation>首选一致率 {v}%</translation>
        </message>
        <message>
            <source>RTN {v}</source>
            <translation>RTN {v}</translation>
        </message>
        <message>
            <source>on {tokens} tokens of {text}</source>
            <translation>基于 {text} 的 {tokens} 个词元</translation>
        </message>
        <message>
            <source>the result looks implausible</source>
            <translation>结果看起来不可信</translation>
        </message>
    </context>
    <context>
        <name>Job</name>
        <message>
            <source>cancelling…</source>
            <translation>正在取消…</translation>
        </message>
    </context>
    <context>
        <name>JobRunner</name>
        <message>
            <source>Busy</source>
            <translation>正忙</translation>
        </message>
        <message>
            <source>{model} is in use by “{job}”. Wait for it to finish or cancel it first.</source>
            <translation>{model} 正被“{job}”使用。请等它完成，或先取消它。</translation>
        </message>
    </context>
    <context>
        <name>JobsStatus</name>
        <message>
            <source>Cancel</source>
            <translation>取消</translation>
        </message>
        <message>
            <source>Cancel this job (it stops at its next step)</source>
            <translation>取消此任务（在下一步停止）</translation>
        </message>
        <message>
            <source>(+{n} more)</source>
            <translation>（另有 {n} 个）</translation>
        </message>
    </context>
    <context>
        <name>LayerErrorPlot</name>
        <message>
            <source>relative output error</source>
            <translation>相对输出误差</translation>
        </message>
        <message>
            <source>Linear layer (in job order)</source>
            <translation>线性层（按任务顺序）</translation>
        </message>
        <message>
            <source>kept</source>
            <translation>保留</translation>
        </message>
        <message>
            <source>{bits}-bit</source>
            <translation>{bits} 位</translation>
        </message>
    </context>
    <context>
        <name>MainWindow</name>
        <message>
            <source>qdesk — quantize and compare language models</source>
            <translation>qdesk — 量化并比较语言模型</translation>
        </message>
        <message>
            <source>&amp;File</source>
            <translation>文件(&amp;F)</translation>
        </message>
        <message>
            <source>Open model &amp;folder…</source>
            <translation>打开模型文件夹(&amp;F)…</translation>
        </message>
        <message>
            <source>Open &amp;GGUF file…</source>
            <translation>打开 &amp;GGUF 文件…</translation>
        </message>
        <message>
            <source>&amp;Settings…</source>
            <translation>设置(&amp;S)…</translation>
        </message>
        <message>
            <source>&amp;Quit</source>
            <translation>退出(&amp;Q)</translation>
        </message>
        <message>
            <source>&amp;Job</source>
            <translation>任务(&amp;J)</translation>
        </message>
        <message>
            <source>&amp;Run the page's job</source>
            <translation>运行本页任务(&amp;R)</translation>
        </message>
        <message>
            <source>&amp;Cancel the page's job</source>
            <translation>取消本页任务(&amp;C)</translation>
        </message>
        <message>
            <source>&amp;Pages</source>
            <translation>页面(&amp;P)</translation>
        </message>
        <message>
            <source>Stopping the running jobs before closing…</source>
            <translation>正在停止运行中的任务，然后关闭…</translation>
        </message>
        <message>
            <source>Jobs are running</source>
            <translation>有任务正在运行</translation>
        </message>
        <message>
            <source>These jobs are still running:
{jobs}

Cancel them and quit? Nothing half-written is left behind.</source>
            <translation>以下任务仍在运行：
{jobs}

取消它们并退出吗？不会留下写了一半的文件。</translation>
        </message>
    </context>
    <context>
        <name>MemoryStatus</name>
        <message>
            <source>{device} · qdesk uses {used} · {free} free</source>
            <translation>{device} · qdesk 占用 {used} · 可用 {free}</translation>
        </message>
        <message>
            <source> · GPU {free} free</source>
            <translation> · GPU 可用 {free}</translation>
        </message>
    </context>
    <context>
        <name>ModelFactsView</name>
        <message>
            <source>Model</source>
            <translation>模型</translation>
        </message>
        <message>
            <source>Source</source>
            <translation>来源</translation>
        </message>
        <message>
            <source>Backend</source>
            <translation>后端</translation>
        </message>
        <message>
            <source>Architecture</source>
            <translation>架构</translation>
        </message>
        <message>
            <source>Parameters</source>
            <translation>参数量</translation>
        </message>
        <message>
            <source>Layers</source>
            <translation>层数</translation>
        </message>
        <message>
            <source>Hidden size</source>
            <translation>隐藏维度</translation>
        </message>
        <message>
            <source>Vocabulary</source>
            <translation>词表</translation>
        </message>
        <message>
            <source>Context</source>
            <translation>上下文</translation>
        </message>
        <message>
            <source>Dtype</source>
            <translation>数据类型</translation>
        </message>
        <message>
            <source>Device</source>
            <translation>设备</translation>
        </message>
        <message>
            <source>Memory</source>
            <translation>内存</translation>
        </message>
        <message>
            <source>Quantization</source>
            <translation>量化</translation>
        </message>
        <message>
            <source>Bits per weight</source>
            <translation>每权重位数</translation>
        </message>
        <message>
            <source>Calibration</source>
            <translation>校准</translation>
        </message>
        <message>
            <source>Self-check</source>
            <translation>自检</translation>
        </message>
        <message>
            <source>{n}M</source>
            <translation>{n}M</translation>
        </message>
        <message>
            <source>{n} tokens</source>
            <translation>{n} 个词元</translation>
        </message>
    </context>
    <context>
        <name>ModelRegistry</name>
        <message>
            <source>{model} is in use by “{job}”; its decoding can be switched when that ends.</source>
            <translation>{model} 正被“{job}”使用；该任务结束后才能切换其解码方式。</translation>
        </message>
        <message>
            <source>Loading {name}</source>
            <translation>正在加载 {name}</translation>
        </message>
        <message>
            <source>loading {name}</source>
            <translation>正在加载 {name}</translation>
        </message>
        <message>
            <source>Busy</source>
            <translation>正忙</translation>
        </message>
        <message>
            <source>{model} is in use by “{job}”; it can be unloaded when that ends.</source>
            <translation>{model} 正被“{job}”使用；它结束后才能卸载。</translation>
        </message>
    </context>
    <context>
        <name>ModelsSidebar</name>
        <message>
            <source>Decode with int8 activations (faster, approximate)</source>
            <translation>用 int8 激活解码（更快，近似）</translation>
        </message>
        <message>
            <source>Each decode step rounds the activations to int8 per 64 values and uses integer dot products, as llama.cpp does: faster on the CPU, but no longer the checkpoint&apos;s exact product. Prefills and comparisons stay exact.</source>
            <translation>每个解码步骤把激活按每 64 个值舍入为 int8，并用整数点积计算（与 llama.cpp 相同）：在 CPU 上更快，但不再是检查点的精确乘积。预填充和比较仍然精确。</translation>
        </message>
        <message>
            <source>Models</source>
            <translation>模型</translation>
        </message>
        <message>
            <source>Loaded</source>
            <translation>已加载</translation>
        </message>
        <message>
            <source>Demo and recent</source>
            <translation>演示与最近使用</translation>
        </message>
        <message>
            <source>Open folder…</source>
            <translation>打开文件夹…</translation>
        </message>
        <message>
            <source>A Hugging Face model folder (config.json and .safetensors) or a qdesk quantized folder (Ctrl+O)</source>
            <translation>Hugging Face 模型文件夹（含 config.json 与 .safetensors）或 qdesk 量化文件夹（Ctrl+O）</translation>
        </message>
        <message>
            <source>Open GGUF…</source>
            <translation>打开 GGUF…</translation>
        </message>
        <message>
            <source>A .gguf file; it runs on llama.cpp, or on transformers as a dense copy (Ctrl+Shift+O)</source>
            <translation>.gguf 文件；在 llama.cpp 上运行，或以稠密副本在 transformers 上运行（Ctrl+Shift+O）</translation>
        </message>
        <message>
            <source>hub id ORG/NAME[@rev]</source>
            <translation>Hub：组织/名称[@版本]</translation>
        </message>
        <message>
            <source>A model on the Hugging Face hub, downloaded once into its cache (safetensors only)</source>
            <translation>Hugging Face Hub 上的模型，只下载一次到缓存（仅 safetensors）</translation>
        </message>
        <message>
            <source>Download</source>
            <translation>下载</translation>
        </message>
        <message>
            <source>Backend:</source>
            <translation>后端：</translation>
        </message>
        <message>
            <source>auto</source>
            <translation>自动</translation>
        </message>
        <message>
            <source>transformers</source>
            <translation>transformers</translation>
        </message>
        <message>
            <source>llama.cpp</source>
            <translation>llama.cpp</translation>
        </message>
        <message>
            <source>auto: llama.cpp for a .gguf file, transformers for everything else. Quantizing needs transformers.</source>
            <translation>自动：.gguf 文件用 llama.cpp，其他用 transformers。量化需要 transformers。</translation>
        </message>
        <message>
            <source>Load</source>
            <translation>加载</translation>
        </message>
        <message>
            <source>Load the selected model (double-click does too)</source>
            <translation>加载选中的模型（双击也可以）</translation>
        </message>
        <message>
            <source>Unload</source>
            <translation>卸载</translation>
        </message>
        <message>
            <source>Free the memory of the selected model</source>
            <translation>释放选中模型占用的内存</translation>
        </message>
        <message>
            <source>ready</source>
            <translation>就绪</translation>
        </message>
        <message>
            <source>loading…</source>
            <translation>加载中…</translation>
        </message>
        <message>
            <source>loading</source>
            <translation>加载中</translation>
        </message>
        <message>
            <source>failed: {reason}</source>
            <translation>失败：{reason}</translation>
        </message>
        <message>
            <source>{bits}-bit</source>
            <translation>{bits} 位</translation>
        </message>
        <message>
            <source>Memory: {basis}; {free} free</source>
            <translation>内存：{basis}；可用 {free}</translation>
        </message>
        <message>
            <source>Needs about {need} ({basis}); {free} of {device} memory free</source>
            <translation>约需 {need}（{basis}）；{device} 内存可用 {free}</translation>
        </message>
        <message>
            <source>Not enough memory</source>
            <translation>内存不足</translation>
        </message>
        <message>
            <source>{name} needs about {need} of {device} memory ({basis}); {free} is free. Unload a model or close other programs.</source>
            <translation>{name} 约需 {need} 的 {device} 内存（{basis}）；可用 {free}。请卸载一个模型或关闭其他程序。</translation>
        </message>
        <message>
            <source>Open a model folder</source>
            <translation>打开模型文件夹</translation>
        </message>
        <message>
            <source>Open a GGUF file</source>
            <translation>打开 GGUF 文件</translation>
        </message>
        <message>
            <source>GGUF models (*.gguf);;All files (*)</source>
            <translation>GGUF 模型 (*.gguf);;所有文件 (*)</translation>
        </message>
        <message>
            <source>Not a hub id</source>
            <translation>不是 Hub ID</translation>
        </message>
        <message>
            <source>“{text}” is not a hub id: write ORG/NAME or ORG/NAME@revision.</source>
            <translation>“{text}”不是 Hub ID：请写成 组织/名称 或 组织/名称@版本。</translation>
        </message>
        <message>
            <source>Remove from the list</source>
            <translation>从列表中移除</translation>
        </message>
    </context>
    <context>
        <name>PlanTable</name>
        <message>
            <source>Module</source>
            <translation>模块</translation>
        </message>
        <message>
            <source>Bits</source>
            <translation>位数</translation>
        </message>
        <message>
            <source>Group</source>
            <translation>分组</translation>
        </message>
        <message>
            <source>Method</source>
            <translation>方法</translation>
        </message>
        <message>
            <source>Error</source>
            <translation>误差</translation>
        </message>
        <message>
            <source>keep</source>
            <translation>保留</translation>
        </message>
        <message>
            <source>per channel</source>
            <translation>逐通道</translation>
        </message>
        <message>
            <source>Double-click a cell to change one layer: bits (or keep it unquantized), group size, method. Error: the layer's relative output error in the last run.</source>
            <translation>双击单元格修改某一层：位数（或保留不量化）、分组大小、方法。误差：该层在上次运行中的相对输出误差。</translation>
        </message>
    </context>
    <context>
        <name>QuantizeOptionsForm</name>
        <message>
            <source>Method</source>
            <translation>方法</translation>
        </message>
        <message>
            <source>Plan</source>
            <translation>方案</translation>
        </message>
        <message>
            <source>Calibration</source>
            <translation>校准</translation>
        </message>
        <message>
            <source>Output folder</source>
            <translation>输出文件夹</translation>
        </message>
        <message>
            <source>Method:</source>
            <translation>方法：</translation>
        </message>
        <message>
            <source>HQQ zero:</source>
            <translation>HQQ 零点：</translation>
        </message>
        <message>
            <source>Clip search:</source>
            <translation>截断搜索：</translation>
        </message>
        <message>
            <source>Bits:</source>
            <translation>位数：</translation>
        </message>
        <message>
            <source>Group size:</source>
            <translation>分组大小：</translation>
        </message>
        <message>
            <source>Zero point:</source>
            <translation>零点：</translation>
        </message>
        <message>
            <source>Preset:</source>
            <translation>预设：</translation>
        </message>
        <message>
            <source>Budget:</source>
            <translation>预算：</translation>
        </message>
        <message>
            <source>Seed:</source>
            <translation>随机种子：</translation>
        </message>
        <message>
            <source>Set:</source>
            <translation>数据集：</translation>
        </message>
        <message>
            <source>Samples × tokens:</source>
            <translation>样本数 × 词元数：</translation>
        </message>
        <message>
            <source>Round to nearest: fast, no calibration needed except to measure the error</source>
            <translation>就近取整：快速，除测量误差外无需校准</translation>
        </message>
        <message>
            <source>GPTQ: rounds column by column and corrects the remaining columns with the calibration inputs' second moments (Hessian)</source>
            <translation>GPTQ：逐列取整，并用校准输入的二阶矩（Hessian）修正其余各列</translation>
        </message>
        <message>
            <source>AWQ: scales the input channels that carry large activations before rounding, so they lose less; needs calibration</source>
            <translation>AWQ：取整前放大激活值大的输入通道，使其损失更少；需要校准</translation>
        </message>
        <message>
            <source>HQQ: optimises each group's zero point (and scale) against an lp error; no calibration needed; asymmetric only</source>
            <translation>HQQ：按 lp 误差优化每组的零点（及缩放）；无需校准；仅非对称</translation>
        </message>
        <message>
            <source>SignRound: learns each weight's rounding and each group's clipping by signed gradient descent on every decoder block's output; slowest, most accurate; needs calibration</source>
            <translation>SignRound：以符号梯度下降、按每个解码器块的输出学习每个权重的取整和每组的截断；最慢、最精确；需要校准</translation>
        </message>
        <message>
            <source>Iterations:</source>
            <translation>迭代次数：</translation>
        </message>
        <message>
            <source>SignRound: gradient steps per decoder block (more: better and slower)</source>
            <translation>SignRound：每个解码器块的梯度步数（越多越好，也越慢）</translation>
        </message>
        <message>
            <source>How weights are rounded to integers</source>
            <translation>权重如何取整为整数</translation>
        </message>
        <message>
            <source>integer (packed, bits + 16 per group)</source>
            <translation>整数（打包，每组 位数 + 16 位）</translation>
        </message>
        <message>
            <source>16-bit float (better at 4 bits, larger file)</source>
            <translation>16 位浮点（4 位时更好，文件更大）</translation>
        </message>
        <message>
            <source>How HQQ stores each group's zero point</source>
            <translation>HQQ 如何存储每组的零点</translation>
        </message>
        <message>
            <source>auto (on for the narrow grid only)</source>
            <translation>自动（仅窄网格时开启）</translation>
        </message>
        <message>
            <source>on</source>
            <translation>开</translation>
        </message>
        <message>
            <source>off (plain min-max)</source>
            <translation>关（普通最小-最大）</translation>
        </message>
        <message>
            <source>Dense targets:</source>
            <translation>稠密目标：</translation>
        </message>
        <message>
            <source>auto (off for GPTQ, on for SignRound)</source>
            <translation>自动（GPTQ 关，SignRound 开）</translation>
        </message>
        <message>
            <source>off</source>
            <translation>关</translation>
        </message>
        <message>
            <source>Aim each layer at the dense model&apos;s output, so it also makes up for the error the layers before it left (GPTQ: better, about twice the time)</source>
            <translation>让每一层对准稠密模型的输出，从而也弥补前面各层留下的误差（GPTQ：更好，约两倍耗时）</translation>
        </message>
        <message>
            <source>RTN: narrow each group's range to the one with the least squared weight error</source>
            <translation>RTN：把每组的范围收窄到权重平方误差最小的范围</translation>
        </message>
        <message>
            <source>Integer width of each weight; fewer bits, smaller model, larger error</source>
            <translation>每个权重的整数位宽；位数越少，模型越小，误差越大</translation>
        </message>
        <message>
            <source>per channel</source>
            <translation>逐通道</translation>
        </message>
        <message>
            <source>How many consecutive weights of a row share one scale (and zero point). Smaller groups follow the weights more closely and cost more bits per weight; per channel is one scale per output row.</source>
            <translation>一行中多少个连续权重共用一个缩放（和零点）。分组越小越贴合权重，但每权重位数越多；逐通道即每个输出行一个缩放。</translation>
        </message>
        <message>
            <source>symmetric</source>
            <translation>对称</translation>
        </message>
        <message>
            <source>asymmetric (zero point)</source>
            <translation>非对称（零点）</translation>
        </message>
        <message>
            <source>Symmetric: the integer grid is centred on zero (one scale per group). Asymmetric: each group also stores a zero point, so a range that is not centred on zero uses every level; costs a few bits per group.</source>
            <translation>对称：整数网格以零为中心（每组一个缩放）。非对称：每组还存储一个零点，使不以零为中心的范围也能用满所有级别；每组多花几位。</translation>
        </message>
        <message>
            <source>custom (the table)</source>
            <translation>自定义（表格）</translation>
        </message>
        <message>
            <source>from a file…</source>
            <translation>来自文件…</translation>
        </message>
        <message>
            <source>Which layers get which bits: uniform; keep attention, MLP or q/k unquantized; sensitivity measures each layer and spends a budget of bits where they help most. Edit single layers in the Plan tab.</source>
            <translation>哪些层用多少位：统一；保留注意力、MLP 或 q/k 不量化；敏感度方案会测量每一层，把位数预算花在最有帮助的地方。可在“方案”标签页中修改单个层。</translation>
        </message>
        <message>
            <source>+0.5 over uniform</source>
            <translation>比统一方案多 0.5</translation>
        </message>
        <message>
            <source> bits per weight</source>
            <translation> 位/权重</translation>
        </message>
        <message>
            <source>Sensitivity plan: the average bits per weight to spend</source>
            <translation>敏感度方案：要花费的平均每权重位数</translation>
        </message>
        <message>
            <source>a .txt / .jsonl file…</source>
            <translation>.txt / .jsonl 文件…</translation>
        </message>
        <message>
            <source>The text the quantizer sees: GPTQ and AWQ fit the weights to these inputs, and every method's error is measured on them. mix = English prose, chat, code, worked problems and Chinese in equal parts.</source>
            <translation>量化器看到的文本：GPTQ 和 AWQ 会让权重拟合这些输入，所有方法的误差也在其上测量。mix = 英文散文、对话、代码、解题过程和中文各占一份。</translation>
        </message>
        <message>
            <source>Preview…</source>
            <translation>预览…</translation>
        </message>
        <message>
            <source>Show a few samples of the calibration set</source>
            <translation>显示校准集中的几个样本</translation>
        </message>
        <message>
            <source>Number of calibration samples</source>
            <translation>校准样本数</translation>
        </message>
        <message>
            <source>Tokens per calibration sample</source>
            <translation>每个校准样本的词元数</translation>
        </message>
        <message>
            <source>Which windows of the set are drawn</source>
            <translation>从数据集中抽取哪些窗口</translation>
        </message>
        <message>
            <source>Wrap file samples in the model's chat template</source>
            <translation>用模型的对话模板包装文件样本</translation>
        </message>
        <message>
            <source>For a calibration file of plain texts: present each as a user message, as the model sees chat</source>
            <translation>对于纯文本的校准文件：把每段作为用户消息呈现，就像模型在对话中看到的那样</translation>
        </message>
        <message>
            <source>folder for the quantized model</source>
            <translation>量化模型的文件夹</translation>
        </message>
        <message>
            <source>Written under a temporary name and renamed at the end: a cancelled or failed run leaves nothing</source>
            <translation>先以临时名称写入，最后再重命名：取消或失败的运行不会留下任何文件</translation>
        </message>
        <message>
            <source>Browse…</source>
            <translation>浏览…</translation>
        </message>
        <message>
            <source>Replace an earlier qdesk checkpoint there</source>
            <translation>替换该处先前的 qdesk 检查点</translation>
        </message>
        <message>
            <source>Only a folder that holds a qdesk checkpoint is replaced, never other files</source>
            <translation>只替换存放 qdesk 检查点的文件夹，绝不替换其他文件</translation>
        </message>
        <message>
            <source>Not offered: {sizes} — they do not divide the input width {widths} of some layers.</source>
            <translation>未提供：{sizes} — 它们不能整除某些层的输入宽度 {widths}。</translation>
        </message>
        <message>
            <source>A plan file</source>
            <translation>方案文件</translation>
        </message>
        <message>
            <source>Plans (*.yaml *.yml *.json)</source>
            <translation>方案 (*.yaml *.yml *.json)</translation>
        </message>
        <message>
            <source>A calibration file</source>
            <translation>校准文件</translation>
        </message>
        <message>
            <source>Texts (*.txt *.jsonl);;All files (*)</source>
            <translation>文本 (*.txt *.jsonl);;所有文件 (*)</translation>
        </message>
        <message>
            <source>Where the new model's folder goes</source>
            <translation>新模型文件夹的位置</translation>
        </message>
    </context>
    <context>
        <name>QuantizePage</name>
        <message>
            <source>Quantize</source>
            <translation>量化</translation>
        </message>
        <message>
            <source>Run</source>
            <translation>运行</translation>
        </message>
        <message>
            <source>Quantize the model with these options (Ctrl+R)</source>
            <translation>用这些选项量化模型（Ctrl+R）</translation>
        </message>
        <message>
            <source>Cancel</source>
            <translation>取消</translation>
        </message>
        <message>
            <source>Stop after the current layer; the model is restored and nothing is written (Esc)</source>
            <translation>在当前层之后停止；模型会恢复原状，不写入任何文件（Esc）</translation>
        </message>
        <message>
            <source>Error per layer</source>
            <translation>逐层误差</translation>
        </message>
        <message>
            <source>Plan</source>
            <translation>方案</translation>
        </message>
        <message>
            <source>Sensitivity</source>
            <translation>敏感度</translation>
        </message>
        <message>
            <source>Progress over the Linear layers</source>
            <translation>线性层的进度</translation>
        </message>
        <message>
            <source>preparing the calibration set…</source>
            <translation>正在准备校准集…</translation>
        </message>
        <message>
            <source>Select a model in the sidebar (the demo model works offline).</source>
            <translation>请在侧栏中选择一个模型（演示模型可离线使用）。</translation>
        </message>
        <message>
            <source>{name} is not loaded yet.</source>
            <translation>{name} 尚未加载。</translation>
        </message>
        <message>
            <source>{name} runs on llama.cpp; quantizing needs the transformers backend (load it with backend transformers).</source>
            <translation>{name} 运行在 llama.cpp 上；量化需要 transformers 后端（请以 transformers 后端加载）。</translation>
        </message>
        <message>
            <source>{name} is already quantized; quantize its original model.</source>
            <translation>{name} 已经量化过；请量化它的原始模型。</translation>
        </message>
        <message>
            <source>Model: &lt;b&gt;{name}&lt;/b&gt; · {params}M parameters · {layers} layers · {dtype} on {device}</source>
            <translation>模型：&lt;b&gt;{name}&lt;/b&gt; · {params}M 参数 · {layers} 层 · {device} 上的 {dtype}</translation>
        </message>
        <message>
            <source>Measuring {name}</source>
            <translation>正在测量 {name}</translation>
        </message>
        <message>
            <source>Measuring the model…</source>
            <translation>正在测量模型…</translation>
        </message>
        <message>
            <source>at most {bpw}</source>
            <translation>至多 {bpw}</translation>
        </message>
        <message>
            <source>Predicted: &lt;b&gt;{bpw}&lt;/b&gt; bits per weight · output about &lt;b&gt;{size}&lt;/b&gt; · about &lt;b&gt;{time}&lt;/b&gt; · job memory {mem} besides the model ({free} free)</source>
            <translation>预计：每权重 &lt;b&gt;{bpw}&lt;/b&gt; 位 · 输出约 &lt;b&gt;{size}&lt;/b&gt; · 约 &lt;b&gt;{time}&lt;/b&gt; · 任务内存（不含模型）{mem}（可用 {free}）</translation>
        </message>
        <message>
            <source>No model</source>
            <translation>没有模型</translation>
        </message>
        <message>
            <source>Calibration preview</source>
            <translation>校准预览</translation>
        </message>
        <message>
            <source>Three samples of “{set}” ({tokens} tokens each, seed {seed}); the run draws {n} such samples of {t} tokens.</source>
            <translation>“{set}”的三个样本（每个 {tokens} 个词元，种子 {seed}）；运行时会抽取 {n} 个这样的样本，每个 {t} 个词元。</translation>
        </message>
        <message>
            <source>Preparing a calibration preview</source>
            <translation>正在准备校准预览</translation>
        </message>
        <message>
            <source>Cannot quantize</source>
            <translation>无法量化</translation>
        </message>
        <message>
            <source>The model is still being measured; try again in a moment.</source>
            <translation>模型仍在测量中；请稍后再试。</translation>
        </message>
        <message>
            <source>quantizing needs about {need} of {device} memory besides the model and {free} is free (use fewer calibration samples or tokens)</source>
            <translation>除模型外，量化约需 {need} 的 {device} 内存，而可用只有 {free}（请减少校准样本数或词元数）</translation>
        </message>
        <message>
            <source>Quantizing {name}</source>
            <translation>正在量化 {name}</translation>
        </message>
        <message>
            <source>cancelling after this layer…</source>
            <translation>将在本层之后取消…</translation>
        </message>
        <message>
            <source>embedding the calibration samples</source>
            <translation>正在嵌入校准样本</translation>
        </message>
        <message>
            <source>measuring sensitivity</source>
            <translation>正在测量敏感度</translation>
        </message>
        <message>
            <source>layer {i}/{n}: {name} ({method} {bits}-bit) error {err}</source>
            <translation>第 {i}/{n} 层：{name}（{method} {bits} 位）误差 {err}</translation>
        </message>
        <message>
            <source>saving {path}</source>
            <translation>正在保存 {path}</translation>
        </message>
        <message>
            <source>tuning block {b}/{n}: iteration {i}/{k}</source>
            <translation>正在调优第 {b}/{n} 块：第 {i}/{k} 次迭代</translation>
        </message>
        <message>
            <source>tuned block {b}/{n} in {s}</source>
            <translation>第 {b}/{n} 块调优完成，用时 {s}</translation>
        </message>
        <message>
            <source>checked the result on held-out text</source>
            <translation>已在留出文本上检查结果</translation>
        </message>
        <message>
            <source>elapsed {t}</source>
            <translation>已用 {t}</translation>
        </message>
        <message>
            <source>about {t} left</source>
            <translation>约剩 {t}</translation>
        </message>
        <message>
            <source>qdesk memory {m}</source>
            <translation>qdesk 内存 {m}</translation>
        </message>
        <message>
            <source>Done: {path}</source>
            <translation>完成：{path}</translation>
        </message>
    </context>
    <context>
        <name>QuantizeSummaryView</name>
        <message>
            <source>Chat with it</source>
            <translation>与它对话</translation>
        </message>
        <message>
            <source>Open the chat page with the original and the new model</source>
            <translation>打开对话页，同时载入原模型和新模型</translation>
        </message>
        <message>
            <source>Export…</source>
            <translation>导出…</translation>
        </message>
        <message>
            <source>Export the new model as GGUF or safetensors</source>
            <translation>将新模型导出为 GGUF 或 safetensors</translation>
        </message>
        <message>
            <source>Open folder</source>
            <translation>打开文件夹</translation>
        </message>
        <message>
            <source>Choose the options and press Run (Ctrl+R).</source>
            <translation>选择选项后按“运行”（Ctrl+R）。</translation>
        </message>
        <message>
            <source>Quantizing…</source>
            <translation>正在量化…</translation>
        </message>
        <message>
            <source>Cancelled: the model is as it was and nothing was written.</source>
            <translation>已取消：模型保持原样，没有写入任何文件。</translation>
        </message>
        <message>
            <source>Failed: {reason}</source>
            <translation>失败：{reason}</translation>
        </message>
        <message>
            <source>Done in {time}: {bpw} bits per weight, mean error {err}</source>
            <translation>用时 {time} 完成：每权重 {bpw} 位，平均误差 {err}</translation>
        </message>
        <message>
            <source>{q} layers quantized, {k} kept · plan {plan} · calibration {calib} · peak memory {mem} · {out}</source>
            <translation>量化 {q} 层，保留 {k} 层 · 方案 {plan} · 校准 {calib} · 峰值内存 {mem} · {out}</translation>
        </message>
        <message>
            <source>Held-out check: not reported by this job.</source>
            <translation>留出文本检查：此任务未报告。</translation>
        </message>
        <message>
            <source>Held-out check: {text}</source>
            <translation>留出文本检查：{text}</translation>
        </message>
        <message>
            <source>Warning: the held-out check says this result is implausible — {text}</source>
            <translation>警告：留出文本检查表明此结果不可信 — {text}</translation>
        </message>
    </context>
    <context>
        <name>SensitivityPlot</name>
        <message>
            <source>relative output error (RTN)</source>
            <translation>相对输出误差（RTN）</translation>
        </message>
        <message>
            <source>Linear layer (in job order)</source>
            <translation>线性层（按任务顺序）</translation>
        </message>
        <message>
            <source>The sensitivity plan measures every layer at each width, then gives more bits where the error is largest until the budget is spent; the Plan tab shows what it chose.</source>
            <translation>敏感度方案会在每种位宽下测量每一层，然后把更多位数分给误差最大的层，直到预算用完；“方案”标签页显示它的选择。</translation>
        </message>
        <message>
            <source>{bits}-bit</source>
            <translation>{bits} 位</translation>
        </message>
    </context>
    <context>
        <name>SettingsDialog</name>
        <message>
            <source>Settings</source>
            <translation>设置</translation>
        </message>
        <message>
            <source>System language</source>
            <translation>系统语言</translation>
        </message>
        <message>
            <source>Language:</source>
            <translation>语言：</translation>
        </message>
        <message>
            <source>Quantized models go to:</source>
            <translation>量化模型保存到：</translation>
        </message>
        <message>
            <source>the qdesk data folder</source>
            <translation>qdesk 数据文件夹</translation>
        </message>
        <message>
            <source>The folder the Quantize page suggests for new models</source>
            <translation>量化页为新模型建议的文件夹</translation>
        </message>
        <message>
            <source>Browse…</source>
            <translation>浏览…</translation>
        </message>
        <message>
            <source>Open the demo model at start</source>
            <translation>启动时打开演示模型</translation>
        </message>
        <message>
            <source>Where quantized models go</source>
            <translation>量化模型的保存位置</translation>
        </message>
    </context>
</TS>
