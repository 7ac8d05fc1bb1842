// Type-aware lint with a short rule set, each rule earning its place (issue 15):
// - no-floating-promises / no-misused-promises: an unhandled rejection in a long-running server is a crash or a
//   silently lost error; every promise is awaited, returned, or handled with a comment saying why.
// - no-unused-vars: dead code hides intent (knip finds unused files and exports; this finds the rest).
// - consistent-type-imports: with `verbatimModuleSyntax` a type-only import must say so, or Node's type stripping
//   would load the module at run time.
// - no-non-null-assertion is NOT on: with `noUncheckedIndexedAccess` every `arr[i]` in a bounds-checked loop is
//   `T | undefined`; a check there is dead code on the hot path. Non-null on a Map.get() result is flagged by
//   review, not by a rule that cannot tell the two apart.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['node_modules/**', 'coverage/**', '.tap/**'] },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        // tap queues subtests itself: a top-level `t.test(...)` is awaited by the runner, not by the caller.
        { allowForKnownSafePromises: [{ from: 'package', package: '@tapjs/core', name: 'PromiseWithSubtest' }] },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-explicit-any': 'error',
      'no-empty': ['error', { allowEmptyCatch: false }],
      'no-control-regex': 'off',
    },
  },
)
