// The import graph is layered: no value-import cycles (type-only imports are erased and may cycle),
// nothing below kernels' ops/ imports ops/, packages depend kernels ← core ← parallel and kernels ← hub
// (the root composes them all), and no file reaches into another package's src/ except through the
// entry points that package's package.json exports. dependency-cruiser resolves the imports (tsconfig,
// workspace packages, `exports` subpaths) and tells `import type` apart from value imports.
import { describe, expect, test } from 'bun:test';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ICruiseResult, type IForbiddenRuleType, type IModule, cruise } from 'dependency-cruiser';

const root = join(import.meta.dir, '..');
const packages = ['kernels', 'core', 'hub', 'parallel'] as const;
type PackageName = (typeof packages)[number];

/** Which workspace packages each package may import (its package.json must list the same). */
const allowedPackageImports: Record<PackageName, readonly PackageName[]> = {
  kernels: [],
  core: ['kernels'],
  hub: ['kernels'],
  parallel: ['kernels', 'core'],
};

/**
 * Kernels' layers below ops/: the tensor and its creation, storage, devices, the native library, and
 * the autograd graph the ops record into. The backward engine (autograd/backward.ts, checkpoint.ts)
 * runs ops (it adds gradients) and sits above them: ops must not import it.
 */
const belowOps = '^packages/kernels/src/(runtime/|device/|native/|autograd/(graph|function|detach)\\.ts$|(tensor|creation|dtype|shape|random|json)\\.ts$)';

const layerRules: IForbiddenRuleType[] = [
  {
    name: 'no-value-cycle',
    severity: 'error',
    from: {},
    to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
  },
  {
    name: 'below-ops-imports-ops',
    severity: 'error',
    from: { path: belowOps, pathNot: '\\.test\\.ts$' },
    to: { path: '^packages/kernels/src/ops/', dependencyTypesNot: ['type-only'] },
  },
  {
    // Kernels choose paths by the device's tuning table (device/kernel-tuning.ts), not the adapter's name.
    name: 'ops-read-adapter-kind',
    severity: 'error',
    from: { path: '^packages/kernels/src/(ops|runtime)/', pathNot: '\\.test\\.ts$' },
    to: { path: '^packages/kernels/src/device/dawn\\.ts$' },
  },
  {
    name: 'ops-imports-backward-engine',
    severity: 'error',
    from: { path: '^packages/kernels/src/ops/', pathNot: '\\.test\\.ts$' },
    to: { path: '^packages/kernels/src/autograd/(backward|checkpoint)\\.ts$', dependencyTypesNot: ['type-only'] },
  },
];

async function cruiseTree(baseDir: string, paths: string[], rules: IForbiddenRuleType[]): Promise<ICruiseResult> {
  const { output } = await cruise(
    paths,
    {
      baseDir,
      tsPreCompilationDeps: true,
      doNotFollow: { path: 'node_modules' },
      validate: true,
      ruleSet: { forbidden: rules },
    },
    { exportsFields: ['exports'], conditionNames: ['import', 'default'] },
    { tsConfig: { fileName: join(baseDir, 'tsconfig.json') } },
  );
  if (typeof output === 'string') throw new Error('dependency-cruiser returned text instead of a result');
  return output;
}

function violationLines(result: ICruiseResult, rule: string): string[] {
  return result.summary.violations
    .filter((v) => v.rule.name === rule)
    .map((v) => (v.cycle?.length ? `${v.from} > ${v.cycle.map((step) => step.name).join(' > ')}` : `${v.from} -> ${v.to}`));
}

function packageOf(path: string): PackageName | 'root' | undefined {
  const match = /^packages\/([^/]+)\//.exec(path);
  if (match) return match[1] as PackageName;
  return /^(src|test|scripts|browser)\//.test(path) ? 'root' : undefined;
}

function exportedEntries(name: PackageName): Set<string> {
  const manifest = JSON.parse(readFileSync(join(root, 'packages', name, 'package.json'), 'utf8')) as {
    exports: Record<string, string>;
  };
  return new Set(Object.values(manifest.exports).map((target) => join('packages', name, target)));
}

describe('import layering', () => {
  // Source and test files of every package and the root: tests must respect package borders too.
  const folders = [...packages.flatMap((p) => [`packages/${p}/src`, `packages/${p}/test`]), 'src', 'test', 'scripts', 'browser'];
  const whole = cruiseTree(
    root,
    folders.filter((folder) => existsSync(join(root, folder))),
    layerRules,
  );

  test('no value-import cycles', async () => {
    expect(violationLines(await whole, 'no-value-cycle')).toEqual([]);
  }, 120_000);

  test('nothing below kernels/ops value-imports ops/, and ops do not import the backward engine', async () => {
    expect(violationLines(await whole, 'below-ops-imports-ops')).toEqual([]);
    expect(violationLines(await whole, 'ops-imports-backward-engine')).toEqual([]);
    expect(violationLines(await whole, 'ops-read-adapter-kind')).toEqual([]);
  });

  test('packages import only the packages below them, through their exported entry points', async () => {
    const modules: IModule[] = (await whole).modules;
    const entries = new Map(packages.map((p) => [p, exportedEntries(p)]));
    const problems: string[] = [];
    let crossings = 0;
    for (const module of modules) {
      const from = packageOf(module.source);
      if (from === undefined) continue;
      for (const dependency of module.dependencies) {
        if (dependency.couldNotResolve && dependency.module.startsWith('@nemotron-ts/')) {
          problems.push(`${module.source}: cannot resolve ${dependency.module}`);
          continue;
        }
        const to = packageOf(dependency.resolved);
        if (to === undefined || to === from) continue;
        crossings++;
        if (to === 'root') {
          problems.push(`${module.source} -> ${dependency.resolved}: packages do not import the root`);
        } else if (from !== 'root' && !allowedPackageImports[from].includes(to)) {
          problems.push(`${module.source} -> ${dependency.resolved}: ${from} may not import ${to}`);
        } else if (!entries.get(to)?.has(dependency.resolved)) {
          problems.push(`${module.source} -> ${dependency.resolved}: deep import into ${to} (use its exports)`);
        }
      }
    }
    expect(problems).toEqual([]);
    expect(crossings).toBeGreaterThan(100); // the imports between packages were resolved and seen
  });

  test('each package.json lists exactly the workspace packages it may import', () => {
    for (const name of packages) {
      const manifest = JSON.parse(readFileSync(join(root, 'packages', name, 'package.json'), 'utf8')) as {
        dependencies?: Record<string, string>;
      };
      const listed = Object.keys(manifest.dependencies ?? {})
        .filter((d) => d.startsWith('@nemotron-ts/'))
        .map((d) => d.slice('@nemotron-ts/'.length))
        .sort();
      expect({ name, listed }).toEqual({ name, listed: [...allowedPackageImports[name]].sort() });
    }
  });
});

describe('the cycle rule itself', () => {
  // A check that cannot fail proves nothing: a value cycle must be caught, a type-only one let through.
  function toyTree(aImportsB: string): string {
    const dir = mkdtempSync(join(tmpdir(), 'layering-'));
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { verbatimModuleSyntax: true } }));
    writeFileSync(join(dir, 'a.ts'), `${aImportsB}\nexport const a = 1;\nexport type Bee = B;\n`);
    writeFileSync(join(dir, 'b.ts'), "import { a } from './a';\nexport type B = number;\nexport const b = a;\n");
    return dir;
  }

  for (const [importLine, cycles] of [
    ["import type { B } from './b';", 0],
    ["import { type B, b } from './b';\nexport const c = b;", 1],
  ] as const) {
    test(`${importLine.split('\n')[0]} → ${cycles} cycle(s)`, async () => {
      const dir = toyTree(importLine);
      try {
        const result = await cruiseTree(dir, ['.'], layerRules);
        expect(violationLines(result, 'no-value-cycle').length).toBe(cycles);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
