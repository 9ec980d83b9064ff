import { useEffect, useRef } from 'react';
import { EditorState } from '@codemirror/state';
import { EditorView, keymap, lineNumbers, highlightActiveLine } from '@codemirror/view';
import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import { python } from '@codemirror/lang-python';
import { bracketMatching, indentOnInput, syntaxHighlighting, defaultHighlightStyle } from '@codemirror/language';
import { lintGutter, setDiagnostics, type Diagnostic } from '@codemirror/lint';

export type CodeProblem = { message: string; line?: number | null; column?: number | null };

/** Where a problem at 1-based `line` and `column` falls in `state`'s text: the rest of that word. */
function diagnostic(state: EditorState, problem: CodeProblem): Diagnostic {
  const lineCount = state.doc.lines;
  const line = state.doc.line(Math.min(Math.max(problem.line ?? 1, 1), lineCount));
  const from = Math.min(line.from + Math.max((problem.column ?? 1) - 1, 0), line.to);
  const word = /^\w+/.exec(state.sliceDoc(from, line.to))?.[0].length ?? 0;
  if (from === line.to && line.length > 0) {
    // Past the end of the line (an unclosed bracket): underline its last character.
    return { from: line.to - 1, to: line.to, severity: 'error', message: problem.message };
  }
  const to = word > 0 ? from + word : Math.min(from + 1, line.to);
  return { from, to, severity: 'error', message: problem.message };
}

/**
 * A CodeMirror 6 editor for a condition's or a transform's Starlark (Python's grammar), with the
 * validator's problems underlined at their line and column. Tab indents; Escape then Tab leaves
 * the editor (CodeMirror's own rule for keyboard users).
 */
export function CodeEditor({
  value,
  onChange,
  readOnly,
  label,
  problems,
}: {
  value: string;
  onChange: (code: string) => void;
  readOnly: boolean;
  label: string;
  problems: CodeProblem[];
}) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const changed = useRef(onChange);
  changed.current = onChange;

  useEffect(() => {
    const editor = new EditorView({
      parent: host.current!,
      state: EditorState.create({
        doc: value,
        extensions: [
          lineNumbers(),
          history(),
          highlightActiveLine(),
          indentOnInput(),
          bracketMatching(),
          syntaxHighlighting(defaultHighlightStyle),
          python(),
          lintGutter(),
          keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
          EditorState.readOnly.of(readOnly),
          EditorView.editable.of(!readOnly),
          EditorView.contentAttributes.of({ 'aria-label': label }),
          EditorView.updateListener.of((update) => {
            if (update.docChanged) changed.current(update.state.doc.toString());
          }),
        ],
      }),
    });
    view.current = editor;
    return () => {
      editor.destroy();
      view.current = null;
    };
    // One editor per node: a new value from outside (a reload) is applied below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [readOnly, label]);

  useEffect(() => {
    const editor = view.current;
    if (editor && editor.state.doc.toString() !== value) {
      editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: value } });
    }
  }, [value]);

  useEffect(() => {
    const editor = view.current;
    if (editor) editor.dispatch(setDiagnostics(editor.state, problems.map((p) => diagnostic(editor.state, p))));
  }, [problems, value]);

  return <div ref={host} className="code-editor" data-problems={problems.length} />;
}
