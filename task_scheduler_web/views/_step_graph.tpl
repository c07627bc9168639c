<section class="panel" data-testid="step-graph-panel">
  <h2>{{t('graph.heading')}}</h2>
  <div class="graph-scroll">
    <svg class="step-graph" data-testid="step-graph" width="{{graph['width']}}" height="{{graph['height']}}" viewBox="0 0 {{graph['width']}} {{graph['height']}}" role="img" aria-label="{{t('graph.aria', n=len(graph['nodes']))}}">
      <defs>
        <marker id="graph-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
          <path d="M0,0 L8,4 L0,8 z" class="graph-head"></path>
        </marker>
      </defs>
      % for edge in graph['edges']:
      <path class="graph-edge" d="{{edge['d']}}" marker-end="url(#graph-arrow)" data-from="{{edge['source']}}" data-to="{{edge['target']}}"></path>
      % end
      % for node in graph['nodes']:
      % status = node['status']
      % tip = node['id'] + (' — ' + h['word']('status', status) if status else '')
      % if node['href']:
      <a href="{{node['href']}}" class="graph-node b-{{status or 'step'}}" data-testid="graph-node" data-step-id="{{node['id']}}" data-status="{{status or ''}}">
      % else:
      <g class="graph-node b-{{status or 'step'}}" data-testid="graph-node" data-step-id="{{node['id']}}" data-status="{{status or ''}}">
      % end
        <title>{{tip}}</title>
        <rect x="{{node['x']}}" y="{{node['y']}}" width="{{node['w']}}" height="{{node['h']}}" rx="6"></rect>
        <text x="{{node['x'] + 10}}" y="{{node['y'] + node['h'] / 2}}" dominant-baseline="central">
        % if node['glyph']:
          <tspan class="graph-glyph">{{node['glyph']}}</tspan>
        % end
          {{node['label']}}</text>
      % if node['href']:
      </a>
      % else:
      </g>
      % end
      % end
    </svg>
  </div>
  % if graph['more']:
  <p class="muted small">{{t('graph.more', n=graph['more'])}}</p>
  % end
</section>
